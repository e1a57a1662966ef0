"""NetworkPolicies against the calls runtime/registry.py declares."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from runtime.llm_settings import LLMSettings
from runtime.registry import process

from .common import (
    DNS_PORT,
    HTTPS_PORT,
    NODE_LOCAL_DNS,
    OTLP_PORT,
    POSTGRES_PORT,
    REDIS_PORT,
    WORKLOAD_KINDS,
    Doc,
    by_kind,
    describe,
    selects,
)
from .programs import declared_calls
from .workloads import Workload


@dataclass(frozen=True)
class Pod:
    app: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[tuple[str, int], ...]

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def port(self, port: int | str) -> int | None:
        return port if isinstance(port, int) else dict(self.ports).get(port)


def pods_of(docs: list[Doc]) -> list[Pod]:
    pods = []
    for doc in docs:
        if doc.get("kind") in WORKLOAD_KINDS:
            template = doc["spec"]["template"]
            labels = template["metadata"].get("labels", {})
            ports = [
                (p["name"], int(p["containerPort"])) for c in template["spec"]["containers"] for p in c.get("ports", [])
            ]
            pods.append(
                Pod(labels.get("app.kubernetes.io/name", doc["metadata"]["name"]), tuple(labels.items()), tuple(ports))
            )
    return pods


Edge = tuple[str, str, int]  # (from app, to app or external:<what>, port)


def _peer_targets(peer: Doc, pods: list[Pod]) -> list[str]:
    if "ipBlock" in peer:
        return ["external"]
    if "namespaceSelector" in peer:
        namespace = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name", "?")
        app = peer.get("podSelector", {}).get("matchLabels", {})
        return [f"ns:{namespace}/{app.get('app.kubernetes.io/name') or app.get('k8s-app') or '*'}"]
    return [pod.app for pod in pods if selects(peer.get("podSelector", {}), pod.label_map)]


def allowed_edges(docs: list[Doc]) -> tuple[set[Edge], set[Edge]]:
    """(egress edges, ingress edges) the NetworkPolicies of the namespace allow."""
    pods = pods_of(docs)
    pod_by_app = {pod.app: pod for pod in pods}
    egress: set[Edge] = set()
    ingress: set[Edge] = set()
    for policy in by_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        selected = [pod for pod in pods if selects(spec["podSelector"], pod.label_map)]
        for pod in selected:
            for rule in spec.get("egress", []):
                for target in [t for peer in rule.get("to", []) for t in _peer_targets(peer, pods)]:
                    for port in rule.get("ports", []):
                        target_pod = pod_by_app.get(target)
                        number = target_pod.port(port["port"]) if target_pod else port["port"]
                        egress.add((pod.app, target, int(number) if number is not None else -1))
            for rule in spec.get("ingress", []):
                sources = [t for peer in rule.get("from", []) for t in _peer_targets(peer, pods)] or ["anywhere"]
                for source in sources:
                    for port in rule.get("ports", []):
                        number = pod.port(port["port"])
                        ingress.add((source, pod.app, number if number is not None else -1))
    return egress, ingress


def expected_edges(docs: list[Doc], workloads: list[Workload]) -> tuple[set[Edge], set[Edge], list[str]]:
    """The edges the mesh needs: the gRPC calls runtime/registry.py declares (each service's
    ingress from exactly its declared callers, each egress to exactly the declared callees),
    the database, the LLM, Redis, OTLP export, Prometheus scrapes of metrics ports.
    Returns (egress, ingress, problems)."""
    egress: set[Edge] = set()
    ingress: set[Edge] = set()
    problems: list[str] = []
    pods = {pod.app: pod for pod in pods_of(docs)}
    grpc_port = {w.program.name: w.port("grpc") for w in workloads if w.program.kind == "grpc"}
    database = pods.get("postgres")
    offline_llm = pods.get("offline-llm")
    for workload in workloads:
        app = workload.labels.get("app.kubernetes.io/name", workload.name)
        program = workload.program
        if program.kind in ("grpc", "gateway") and app != program.name:
            # The declared edges name registry entries; the policies select pods by this label.
            problems.append(f"{describe(workload.doc)}: label app.kubernetes.io/name={app}, runs {program.name}")
        for callee in sorted(declared_calls(program)):
            if callee not in grpc_port:
                problems.append(f"{app} calls {callee} (runtime/registry.py), but no {callee} Deployment is rendered")
                continue
            egress.add((app, callee, grpc_port[callee] or -1))
            ingress.add((app, callee, grpc_port[callee] or -1))
        if program.kind == "migration" or (program.kind == "grpc" and process(program.name).needs_postgres):
            # Pooled services reach PgBouncer (components/pgbouncer), the rest the database.
            target = "postgres" if database else "external"
            if "agentmesh.io/database-pooled" in workload.labels and "pgbouncer" in pods:
                target = "pgbouncer"
            egress.add((app, target, POSTGRES_PORT))
            if target != "external":
                ingress.add((app, target, POSTGRES_PORT))
        if program.kind == "grpc" and issubclass(program.settings[0], LLMSettings):
            if offline_llm and "offline-llm" in workload.env.get("LLM_BASE_URL", ""):
                egress.add((app, "offline-llm", offline_llm.port("http") or -1))
                ingress.add((app, "offline-llm", offline_llm.port("http") or -1))
            else:
                egress.add((app, "external", HTTPS_PORT))
        redis = program.kind in ("grpc", "gateway") and process(program.name).redis
        if redis and workload.env.get("RATE_LIMIT_STORAGE_URL", "").startswith("redis://"):
            egress.add((app, "redis", REDIS_PORT))
            ingress.add((app, "redis", REDIS_PORT))
        if program.kind in ("grpc", "gateway") and workload.env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            egress.add((app, "ns:observability/otel-collector", OTLP_PORT))
        if program.kind in ("grpc", "gateway"):
            metrics = workload.port("metrics") or workload.port("http") or -1
            ingress.add(("ns:monitoring/prometheus", app, metrics))
        if program.kind == "gateway":
            ingress.add(("anywhere", app, workload.port("http") or -1))
    return egress, ingress, problems


def check_network_policies(docs: list[Doc], workloads: list[Workload]) -> list[str]:
    problems = []
    policies = by_kind(docs, "NetworkPolicy")
    if not any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        problems.append("no default-deny NetworkPolicy (empty podSelector, Ingress+Egress, no rules)")
    allowed_egress, allowed_ingress = allowed_edges(docs)
    want_egress, want_ingress, call_problems = expected_edges(docs, workloads)
    problems += call_problems
    # DNS is allowed to every pod; it is not a call of the code.
    dns = {edge for edge in allowed_egress if edge[2] == DNS_PORT}
    mesh_apps = {w.labels.get("app.kubernetes.io/name", w.name) for w in workloads}
    problems += check_dns_egress(docs, sorted(mesh_apps))
    mesh_egress = {edge for edge in allowed_egress - dns if edge[0] in mesh_apps}
    mesh_ingress = {edge for edge in allowed_ingress if edge[1] in mesh_apps or edge[0] in mesh_apps}
    for direction, wanted, allowed in (("egress", want_egress, mesh_egress), ("ingress", want_ingress, mesh_ingress)):
        for source, target, port in sorted(wanted - allowed):
            problems.append(f"{direction} {source} -> {target}:{port} is needed but no NetworkPolicy allows it")
        for source, target, port in sorted(allowed - wanted):
            problems.append(
                f"{direction} {source} -> {target}:{port} is allowed but nothing needs it"
                " (runtime/registry.py declares the gRPC calls)"
            )
    return problems


def check_dns_egress(docs: list[Doc], apps: list[str]) -> list[str]:
    """Every pod may resolve names through the cluster DNS pods and through NodeLocal
    DNSCache's link-local address (where it runs, pods never talk to kube-dns directly)."""
    pods = {pod.app: pod for pod in pods_of(docs)}
    problems = []
    for app in apps:
        kube_dns = node_local = False
        for policy in by_kind(docs, "NetworkPolicy"):
            if app not in pods or not selects(policy["spec"]["podSelector"], pods[app].label_map):
                continue
            for rule in policy["spec"].get("egress", []):
                ports = {(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports", [])}
                if ("UDP", DNS_PORT) not in ports or ("TCP", DNS_PORT) not in ports:
                    continue
                for peer in rule.get("to", []):
                    namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
                    if namespace.get("kubernetes.io/metadata.name") == "kube-system" and selects(
                        peer.get("podSelector", {}), {"k8s-app": "kube-dns"}
                    ):
                        kube_dns = True
                    cidr = peer.get("ipBlock", {}).get("cidr")
                    if cidr and ipaddress.ip_address(NODE_LOCAL_DNS) in ipaddress.ip_network(cidr):
                        node_local = True
        if not kube_dns:
            problems.append(f"{app}: no DNS egress (UDP+TCP 53) to kube-system's k8s-app=kube-dns pods")
        if not node_local:
            problems.append(f"{app}: no DNS egress to NodeLocal DNSCache ({NODE_LOCAL_DNS}, UDP+TCP 53)")
    return problems
