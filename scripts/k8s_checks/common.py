"""Paths, constants and the small helpers every check shares."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runtime.registry import PROCESSES, grpc_services

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
COMPONENTS = K8S / "components"
OPERATOR_COMPONENT = COMPONENTS / "prometheus-operator"
MIGRATION_COMPONENT = COMPONENTS / "migration-jobs"
PGBOUNCER_COMPONENT = COMPONENTS / "pgbouncer"
REGISTRY_COMPONENT = COMPONENTS / "registry"
PROD_VALUES = K8S / "overlays" / "prod" / "values.env"
PROD_VALUES_EXAMPLE = K8S / "overlays" / "prod" / "values.example.env"
PROD_REQUIRED_VALUES = ("DATABASE_CIDR", "TRUSTED_PROXIES")
ALERTS = K8S / "observability" / "alerts.yml"
ALERT_TESTS = K8S / "observability" / "tests"
DASHBOARD = K8S / "observability" / "grafana" / "agentmesh-dashboard.json"
SCRAPE_CONFIG = K8S / "observability" / "prometheus.yml"
PROMETHEUS_RULE = OPERATOR_COMPONENT / "prometheusrule.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_URL_PREFIX = "https://github.com/agentmesh/agentmesh/blob/main/docs/runbooks/"
README = K8S / "README.md"
DOCKERFILE = ROOT / "Dockerfile"
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"
KUBERNETES_VERSION = "1.37.0"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
GRPC_SERVICES = tuple(entry.name for entry in grpc_services())
POSTGRES_PORT, REDIS_PORT, DNS_PORT, OTLP_PORT, HTTPS_PORT = 5432, 6379, 53, 4317, 443
# NodeLocal DNSCache's default listen address: pods resolve through it where it runs.
NODE_LOCAL_DNS = "169.254.20.10"
# Kubelet waits this long after the drain for the rest of the shutdown (closing pools,
# flushing spans) before SIGKILL; the agent adds its background drain on top.
SHUTDOWN_MARGIN_S = 10.0
SEVERITIES = ("critical", "warning")
# Placeholder values for secretKeyRef and downward-API variables: the check needs the
# settings to load, not the real values (prod's Secret is created by the operator).
SECRET_PLACEHOLDERS = {
    "DATABASE_URL": "postgresql://agentmesh:placeholder@db.invalid:5432/agentmesh",
    "SIGNING_KEY_SECRET": "placeholder-signing-key-secret-of-at-least-32-characters",
    "REDIS_PASSWORD": "placeholder-redis-password",
    "SERVICE_CREDENTIAL": "placeholder-service-credential-of-at-least-32-characters",
    "SERVICE_CREDENTIALS": ",".join(
        f"{name}=placeholder-{name}-credential-of-at-least-32-characters"
        for name in (entry.name for entry in PROCESSES)
    ),
}
FIELD_PLACEHOLDERS = {
    "metadata.name": "pod-0",
    "metadata.namespace": "agentmesh",
    "spec.nodeName": "node-0",
    "status.podIP": "10.0.0.1",
}

Doc = dict[str, Any]


class CheckFailed(Exception):
    pass


# ---------------------------------------------------------------- manifest model


def describe(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def by_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels or a plain map, matchExpressions)."""
    match_labels = selector.get("matchLabels", {} if "matchExpressions" in selector else selector)
    if any(labels.get(key) != value for key, value in match_labels.items() if key != "matchExpressions"):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True
