"""Each workload against its program's settings: env, ports, probes, drain, upstream addresses."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from pydantic_settings import BaseSettings

from .common import ROOT, SHUTDOWN_MARGIN_S, Doc, by_kind, describe, selects
from .programs import declared_calls, served_service_names
from .workloads import Workload, composition_only_env, load_program_settings, mesh_workloads, setting

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
    # Only the addresses of the calls runtime/registry.py declares (a CLI's own addresses, e.g.
    # the evals CLI's, are for `kubectl exec` runs and default to loopback).
    for callee in sorted(declared_calls(workload.program)):
        addr_field = f"{callee}_addr"
        try:
            address = str(setting(loaded, addr_field))
        except KeyError:
            problems.append(
                f"{where}: calls {callee} (runtime/registry.py), but no settings class reads {addr_field.upper()}"
            )
            continue
        problems += _check_upstream_address(addr_field, address, docs, where)
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
