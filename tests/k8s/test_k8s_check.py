"""`make k8s-check` as tests: both overlays render, validate, pass checkov and agree with
the code; and each cross-check fails when the manifests drift from the code."""

from __future__ import annotations

import copy
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
    assert "drain 20.0s must be < terminationGracePeriodSeconds 20" in problems
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
    problems = "\n".join(k8s_check.cross_check(docs, "prod"))
    assert "egress sessions -> agent:50053 is needed by the code" in problems
    assert "egress sessions -> memory:50054 is allowed but the code makes no such call" in problems


def test_code_calls_come_from_the_addr_settings_the_code_uses() -> None:
    program = k8s_check.program_for(["python", "-m", "services.sessions"])
    assert k8s_check.code_calls(program) == {"auth", "agent"}
    assert k8s_check.code_calls(k8s_check.program_for(["python", "-m", "services.auth"])) == set()
    evals = k8s_check.program_for(["python", "-m", "services.evals"])
    # The evals CLI's sessions/agent addresses are not calls of the server.
    assert k8s_check.code_calls(evals) == {"auth"}
