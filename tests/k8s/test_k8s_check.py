"""`make k8s-check` as tests: both overlays render, validate, pass checkov and agree with
the code; and each cross-check fails when the manifests drift from the code."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("k8s_check", ROOT / "scripts" / "k8s_check.py")
assert _spec is not None and _spec.loader is not None
k8s_check = importlib.util.module_from_spec(_spec)
sys.modules["k8s_check"] = k8s_check
_spec.loader.exec_module(k8s_check)


@pytest.fixture(scope="module", params=k8s_check.OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, k8s_check.render_overlay(request.param)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_overlays_validate_against_kubernetes_schemas(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    assert len(docs) > 50
    assert k8s_check.validate_schemas(docs) == []


def test_manifests_agree_with_the_code(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, docs = rendered
    assert k8s_check.cross_check(docs, overlay) == []
    assert k8s_check.skips_without_reason(docs) == []


def test_checkov_reports_no_failed_check() -> None:
    result = k8s_check.run_checkov({o: k8s_check.render_overlay(o) for o in k8s_check.OVERLAYS})
    assert result.failures == []
    assert result.failed == 0
    assert result.passed > 1000


def test_operator_component_matches_rules_and_services() -> None:
    docs = k8s_check.render_with_operator_component("prod")
    assert {d["kind"] for d in docs} >= {"Role", "RoleBinding", "PrometheusRule"}
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceMonitor"} == {
        "auth",
        "sessions",
        "agent",
        "memory",
        "evals",
        "gateway",
    }
    assert k8s_check.check_operator_component(docs) == []


def test_schema_validation_rejects_an_unknown_field() -> None:
    docs = copy.deepcopy(k8s_check.render_overlay("dev"))
    find(docs, "Deployment", "auth")["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    assert any("auth" in p for p in k8s_check.validate_schemas(docs))


def test_cross_check_catches_drift_from_the_code() -> None:
    docs = copy.deepcopy(k8s_check.render_overlay("prod"))
    auth = find(docs, "Deployment", "auth")["spec"]["template"]["spec"]
    auth["containers"][0]["readinessProbe"]["grpc"]["port"] = 50099
    auth["terminationGracePeriodSeconds"] = 20
    auth["containers"][0]["env"].append({"name": "NOT_A_SETTING", "value": "1"})
    find(docs, "Deployment", "memory")["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "python",
        "-m",
        "services.nope",
    ]
    problems = "\n".join(k8s_check.cross_check(docs, "prod"))
    assert "no module services.nope" in problems

    docs = copy.deepcopy(k8s_check.render_overlay("prod"))
    auth = find(docs, "Deployment", "auth")["spec"]["template"]["spec"]
    auth["containers"][0]["readinessProbe"]["grpc"]["port"] = 50099
    auth["terminationGracePeriodSeconds"] = 20
    auth["containers"][0]["env"].append({"name": "NOT_A_SETTING", "value": "1"})
    problems = "\n".join(k8s_check.cross_check(docs, "prod"))
    assert "readinessProbe port 50099 != GRPC_PORT 50051" in problems
    assert "terminationGracePeriodSeconds 20 < preStop 5 + SHUTDOWN_GRACE_S 300 + margin 10" in problems
    assert "['NOT_A_SETTING'] is read by no settings class" in problems


def test_network_policy_check_needs_every_call_and_no_other() -> None:
    docs = copy.deepcopy(k8s_check.render_overlay("prod"))
    sessions_egress = find(docs, "NetworkPolicy", "sessions-egress")
    # sessions -> agent (ClearHistory on delete) removed; sessions -> memory added.
    sessions_egress["spec"]["egress"] = [
        rule for rule in sessions_egress["spec"]["egress"] if rule["ports"][0]["port"] != 50053
    ] + [
        {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "memory"}}}],
            "ports": [{"protocol": "TCP", "port": 50054}],
        }
    ]
    memory_ingress = find(docs, "NetworkPolicy", "memory-ingress")
    memory_ingress["spec"]["ingress"][0]["from"] = [
        peer
        for peer in memory_ingress["spec"]["ingress"][0]["from"]
        if peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] != "gateway"
    ]
    problems = "\n".join(k8s_check.cross_check(docs, "prod"))
    assert "egress sessions -> agent:50053 is needed but no NetworkPolicy allows it" in problems
    assert "egress sessions -> memory:50054 is allowed but nothing needs it" in problems
    assert "ingress sessions -> memory:50054 is allowed but nothing needs it" not in problems
    assert "ingress gateway -> memory:50054 is needed but no NetworkPolicy allows it" in problems


def test_network_policies_follow_the_registry_not_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """An edge declared in runtime/registry.py needs its egress and ingress rules; one the
    registry drops makes the manifests' rules for it superfluous."""
    from runtime import registry

    changed = tuple(
        dataclasses.replace(entry, calls=(*entry.calls, "evals"))
        if entry.name == "memory"
        else dataclasses.replace(entry, calls=tuple(c for c in entry.calls if c != "agent"))
        if entry.name == "sessions"
        else entry
        for entry in registry.PROCESSES
    )
    monkeypatch.setattr(registry, "PROCESSES", changed)
    problems = problems_of(prod())
    assert "egress memory -> evals:50055 is needed but no NetworkPolicy allows it" in problems
    assert "ingress memory -> evals:50055 is needed but no NetworkPolicy allows it" in problems
    assert (
        "Deployment/memory/memory: calls evals (runtime/registry.py), but no settings class reads EVALS_ADDR"
        in problems
    )
    assert "egress sessions -> agent:50053 is allowed but nothing needs it" in problems
    assert "ingress sessions -> agent:50053 is allowed but nothing needs it" in problems


def test_declared_calls_are_the_registry_s() -> None:
    program = k8s_check.program_for(["python", "-m", "services.sessions"])
    assert k8s_check.declared_calls(program) == {"auth", "agent"}
    # Account deletion and export reach every store of the user's data.
    auth = k8s_check.program_for(["python", "-m", "services.auth"])
    assert k8s_check.declared_calls(auth) == {"sessions", "agent", "memory", "evals"}
    evals = k8s_check.program_for(["python", "-m", "services.evals"])
    # The evals CLI's sessions/agent addresses are not calls of the server.
    assert k8s_check.declared_calls(evals) == {"auth"}
    gateway = k8s_check.program_for(["python", "-m", "gateway"])
    assert k8s_check.declared_calls(gateway) == {"auth", "sessions", "agent", "memory", "evals"}
    migration = k8s_check.program_for(["python", "-m", "runtime.migrate_command", "memory"])
    assert (migration.kind, k8s_check.declared_calls(migration)) == ("migration", set())


# ---------------------------------------------------------------- issue 17: each pitfall is caught


def prod() -> list[dict[str, Any]]:
    return copy.deepcopy(k8s_check.render_overlay("prod"))


def problems_of(docs: list[dict[str, Any]], overlay: str = "prod") -> str:
    return "\n".join(k8s_check.cross_check(docs, overlay))


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def test_image_pull_policy_always_is_caught() -> None:
    docs = prod()
    container(docs, "agent")["imagePullPolicy"] = "Always"
    assert "Deployment/agent/agent: imagePullPolicy Always must be IfNotPresent" in problems_of(docs)


def test_a_job_in_the_default_render_is_caught_and_the_component_carries_them() -> None:
    docs = k8s_check.render_overlay("prod", [k8s_check.MIGRATION_COMPONENT])
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Job"} == {
        f"{s}-migrate" for s in ("auth", "sessions", "agent", "memory", "evals")
    }
    assert "Job/auth-migrate: Jobs belong in the opt-in components/migration-jobs" in problems_of(docs)
    assert k8s_check.check_migration_component(docs) == []
    find(docs, "Job", "auth-migrate")["spec"].pop("ttlSecondsAfterFinished")
    assert "Job/auth-migrate: ttlSecondsAfterFinished must be set" in "\n".join(
        k8s_check.check_migration_component(docs)
    )
    assert not [d for d in prod() if d["kind"] == "Job"]


def test_grace_shorter_than_the_streams_it_drains_is_caught() -> None:
    docs = prod()
    agent = find(docs, "Deployment", "agent")["spec"]["template"]["spec"]
    agent["terminationGracePeriodSeconds"] = 30  # the old value: drain 20 s in a 30 s grace
    problems = problems_of(docs)
    assert "Deployment/agent/agent: terminationGracePeriodSeconds 30 < preStop 5 + SHUTDOWN_GRACE_S 300" in problems
    docs = prod()
    configmap = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gateway-config"))
    configmap["data"]["GATEWAY_SHUTDOWN_GRACE_S"] = "10"  # uvicorn's old 10 s
    assert "GATEWAY_SHUTDOWN_GRACE_S 10s is shorter than GATEWAY_STREAM_TIMEOUT 300s" in problems_of(docs)


def test_services_streaming_over_http_drain_as_long_as_the_stream_deadline() -> None:
    """Auth's ExportAccount and evals' RunEvaluation get GATEWAY_STREAM_TIMEOUT from the
    gateway; with the shared 30 s drain a rollout cut them. Sessions and memory stream nothing
    over HTTP and keep the unary bound."""
    assert k8s_check.streamed_over_http()["agentmesh.auth.v1.AuthService"] == ["ExportAccount"]
    assert "agentmesh.sessions.v1.SessionService" not in k8s_check.streamed_over_http()
    docs = prod()
    for name in ("auth", "evals"):
        config = next(
            d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(f"{name}-config")
        )
        del config["data"]["SHUTDOWN_GRACE_S"]  # back to mesh-config's 30 s
    problems = problems_of(docs)
    assert "auth/auth: SHUTDOWN_GRACE_S 30s is shorter than GATEWAY_STREAM_TIMEOUT (ExportAccount)" in problems
    assert "evals/evals: SHUTDOWN_GRACE_S 30s is shorter than GATEWAY_STREAM_TIMEOUT (RunEvaluation)" in problems
    assert "sessions/sessions: SHUTDOWN_GRACE_S" not in problems and "memory/memory: SHUTDOWN_GRACE_S" not in problems


def test_clusterip_services_and_pick_first_are_caught() -> None:
    docs = prod()
    find(docs, "Service", "agent")["spec"].pop("clusterIP")
    configmap = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("sessions-config")
    )
    configmap["data"]["AGENT_ADDR"] = "agent:50053"
    mesh = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("mesh-config"))
    mesh["data"]["GRPC_LB_POLICY"] = "pick_first"
    problems = problems_of(docs)
    assert "Service/agent: must be headless (clusterIP: None)" in problems
    assert "AGENT_ADDR=agent:50053 must be dns:///<service>:<port>" in problems
    assert "Deployment/memory/memory: GRPC_LB_POLICY is pick_first, not round_robin" in problems


def test_gateway_without_the_shared_config_is_caught() -> None:
    """The old gateway read only gateway-config: no APP_ENV (production guards off), console logs."""
    docs = prod()
    gateway = container(docs, "gateway")
    gateway["envFrom"] = [e for e in gateway["envFrom"] if not e["configMapRef"]["name"].startswith("shared-config")]
    problems = problems_of(docs)
    assert "APP_ENV differs between the processes (['<unset>', 'production'])" in problems
    assert "LOG_FORMAT differs between the processes" in problems


def test_gateway_metrics_on_the_public_port_and_readiness_are_caught() -> None:
    docs = prod()
    gateway = find(docs, "Deployment", "gateway")
    gateway["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "8080"
    gateway["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/healthz"
    problems = problems_of(docs)
    assert "Deployment/gateway/gateway: scrape annotations {'prometheus.io/port': '8080'}" in problems
    assert "Deployment/gateway/gateway: readinessProbe" in problems


def test_replicas_under_an_hpa_and_no_zone_spread_are_caught() -> None:
    docs = prod()
    sessions = find(docs, "Deployment", "sessions")
    sessions["spec"]["replicas"] = 2
    sessions["spec"]["template"]["spec"]["topologySpreadConstraints"] = [
        c
        for c in sessions["spec"]["template"]["spec"]["topologySpreadConstraints"]
        if c["topologyKey"] != "topology.kubernetes.io/zone"
    ]
    problems = problems_of(docs)
    assert "Deployment/sessions: sets replicas, but HorizontalPodAutoscaler/sessions owns them" in problems
    assert "Deployment/sessions: spread across zones and nodes" in problems


def test_dns_only_to_kube_dns_is_caught() -> None:
    """NodeLocal DNSCache: pods query 169.254.20.10, which the kube-dns pod rule does not cover."""
    docs = prod()
    dns = find(docs, "NetworkPolicy", "allow-dns")
    dns["spec"]["egress"][0]["to"] = [peer for peer in dns["spec"]["egress"][0]["to"] if "ipBlock" not in peer]
    assert "gateway: no DNS egress to NodeLocal DNSCache (169.254.20.10, UDP+TCP 53)" in problems_of(docs)


def test_redis_without_auth_is_caught() -> None:
    docs = prod()
    redis = container(docs, "redis")
    redis["args"] = ["--save", "", "--protected-mode", "no"]
    gateway = container(docs, "gateway")
    for var in gateway["env"]:
        if var["name"] == "RATE_LIMIT_STORAGE_URL":
            var["value"] = "redis://redis:6379/0"
    problems = problems_of(docs)
    assert "Deployment/redis: --protected-mode must be yes" in problems
    assert "Deployment/redis: --requirepass must be $(VAR) with VAR from a Secret" in problems
    assert "Deployment/gateway: RATE_LIMIT_STORAGE_URL has no password" in problems


def test_missing_otel_resource_attributes_are_caught() -> None:
    docs = prod()
    auth = container(docs, "auth")
    auth["env"] = [v for v in auth["env"] if v["name"] != "OTEL_RESOURCE_ATTRIBUTES"]
    find(docs, "Deployment", "memory")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] = "0.0.9"
    problems = problems_of(docs)
    assert "Deployment/auth/auth: OTEL_RESOURCE_ATTRIBUTES must carry" in problems
    assert (
        "Deployment/memory/memory: service.version '0.0.9' (label app.kubernetes.io/version) is not the image tag"
        in (problems)
    )


def test_pools_beyond_max_connections_are_caught() -> None:
    """The old sizing: 10 + 10 per pod, HPA maximum 10 (agent 20)."""
    docs = prod()
    mesh = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("mesh-config"))
    mesh["data"].update(DB_POOL_SIZE="10", DB_MAX_OVERFLOW="10")
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        hpa["spec"]["maxReplicas"] = 20 if hpa["metadata"]["name"] == "agent" else 10
    problems = problems_of(docs)
    assert "database connections at maxReplicas: 960 direct" in problems
    assert "> max_connections 100 - reserve 10" in problems
    # The agent opens no SQLAlchemy pool: DB_POOL_SIZE does not change its row.
    assert [row.at_max for row in k8s_check.pool_table(docs)] == [210, 210, 120, 210, 210]


def test_agent_connections_are_its_psycopg_pool_and_its_listen_connection() -> None:
    """The agent's runs, run events and outbox share the checkpoint pool; LISTEN holds one more
    connection per replica. The runtime/database.py definition of open_database is
    not a call (the table used to count 3 SQLAlchemy connections the agent never opened)."""
    docs = prod()
    agent = next(row for row in k8s_check.pool_table(docs) if row.name == "agent")
    assert (agent.per_pod, agent.how) == (6, "4 CHECKPOINT_POOL_MAX_SIZE + 1 LISTEN + 1 spare")
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("agent-config"))
    config["data"]["CHECKPOINT_POOL_MAX_SIZE"] = "30"
    agent = next(row for row in k8s_check.pool_table(docs) if row.name == "agent")
    assert agent.per_pod == 32
    assert "database connections at maxReplicas" in problems_of(docs)


def test_pgbouncer_component_routes_the_pooled_services_and_fits() -> None:
    docs = k8s_check.render_overlay("prod", [k8s_check.MIGRATION_COMPONENT, k8s_check.PGBOUNCER_COMPONENT])
    assert [p for p in k8s_check.cross_check(docs, "prod") if "Jobs belong" not in p] == []
    rows = {row.name: row.via for row in k8s_check.pool_table(docs)}
    assert rows == {
        "auth": "pgbouncer",
        "sessions": "pgbouncer",
        "agent": "direct",
        "memory": "pgbouncer",
        "evals": "pgbouncer",
    }
    ini = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("pgbouncer-config"))
    ini["data"]["pgbouncer.ini"] = ini["data"]["pgbouncer.ini"].replace(
        "max_db_connections = 12", "max_db_connections = 40"
    )
    assert "> max_connections 100 - reserve 10" in problems_of(docs)


def test_prod_refuses_to_render_without_its_required_values() -> None:
    with pytest.raises(k8s_check.CheckFailed, match="DATABASE_CIDR"):
        k8s_check.render(k8s_check.K8S / "overlays" / "prod")
    assert k8s_check.check_prod_values() == []


def test_drain_plan_gives_a_rolling_restart_test_the_manifests_settings() -> None:
    docs = prod()
    agent = k8s_check.drain_plan(docs, "agent")
    gateway = k8s_check.drain_plan(docs, "gateway")
    assert (agent.pre_stop_s, agent.drain_s, agent.grace_s) == (5, 300, 320)
    assert agent.env == {"SHUTDOWN_GRACE_S": "300"}
    assert (gateway.pre_stop_s, gateway.drain_s, gateway.grace_s) == (5, 300, 320)
    assert gateway.env == {"GATEWAY_SHUTDOWN_GRACE_S": "300"}


def test_readme_pool_table_matches_the_manifests() -> None:
    assert k8s_check.check_readme_pool_table(k8s_check.render_overlay("prod")) == []
