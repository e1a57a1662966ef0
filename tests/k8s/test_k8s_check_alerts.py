"""`make k8s-check`'s alert, metric-name and image checks (scripts/k8s_checks/observability.py,
deploy.py): each passes on the committed files and fails on the drift it exists for."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.k8s import ROOT, k8s_check


def test_alert_rule_checks_catch_the_old_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The old rules: CamelCase grpc_code (never written), `page`/`ticket` severities, no
    runbooks, TargetDown on a job label that ServiceMonitors never produce."""
    assert k8s_check.check_alert_rules() == []
    old = yaml.safe_load(subprocess_git_show("k8s/observability/alerts.yml"))
    old_alerts = tmp_path / "alerts.yml"
    old_alerts.write_text(yaml.safe_dump(old))
    monkeypatch.setattr(k8s_check.observability, "ALERTS", old_alerts)
    problems = "\n".join(k8s_check.check_alert_rules())
    assert "alert AgentmeshHighErrorRatio: grpc_code ['DataLoss', 'DeadlineExceeded', 'Internal'" in problems
    assert "alert AgentmeshHighErrorRatio: severity 'page' is not one of critical|warning" in problems
    assert "alert AgentmeshTargetDown: selects on `job`" in problems
    assert "runbook_url must be" in problems


def test_alerts_and_panels_name_metrics_the_code_defines() -> None:
    """A metric renamed in the code (or misspelled in a rule) is caught for alerts and panels;
    kube-state-metrics' and Prometheus' own series are not the code's to define."""
    assert k8s_check.check_metric_names() == []
    alerts = (
        k8s_check.ALERTS.read_text()
        .replace("agent_outbox_oldest_age_seconds", "agent_outbox_age_seconds")
        .replace("agent_llm_circuit_open", "agent_llm_circuit_is_open")
    )
    dashboard = k8s_check.DASHBOARD.read_text().replace("agent_runs_lost_total", "agent_lost_runs_total")
    problems = "\n".join(k8s_check.check_metric_names(alerts, dashboard))
    assert "alert AgentmeshOutboxBacklog: metric agent_outbox_age_seconds is defined nowhere" in problems
    assert "dashboard panel 'Runs lost (replica stopped renewing its leases)': metric agent_lost_runs_total" in problems
    # Names built per service in an f-string (runtime/llm/metrics.py: f"{p}_circuit_open").
    assert "alert AgentmeshLLMCircuitOpen: metric agent_llm_circuit_is_open is defined nowhere" in problems
    assert "AgentmeshLLMFallbacks" not in problems
    assert "AgentmeshRunsLost: metric agent_runs_lost_total" not in problems
    assert "kube_pod" not in problems and "metric up " not in problems


def test_promtool_unit_tests_pass_and_cover_every_alert() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing (make browser)")
    assert k8s_check.check_alert_tests() == []


def test_promtool_tests_fail_on_the_old_rules(tmp_path: Path) -> None:
    """The unit tests can fail: against the committed-before rules they do."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing (make browser)")
    (tmp_path / "alerts.yml").write_text(subprocess_git_show("k8s/observability/alerts.yml"))
    (tmp_path / "tests").mkdir()
    shutil.copy(k8s_check.ALERT_TESTS / "alerts_test.yml", tmp_path / "tests" / "alerts_test.yml")
    result = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "tests" / "alerts_test.yml")], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "alertname: AgentmeshHighErrorRatio" in result.stdout + result.stderr
    assert "alertname: AgentmeshPodNotReady" in result.stdout + result.stderr


def test_dockerfile_without_a_digest_is_caught(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert k8s_check.check_dockerfile() == []
    unpinned = tmp_path / "Dockerfile"
    unpinned.write_text("FROM python:3.11-slim-bookworm AS build\nFROM python:3.11-slim-bookworm\n")
    monkeypatch.setattr(k8s_check.deploy, "DOCKERFILE", unpinned)
    assert len(k8s_check.check_dockerfile()) == 2


# The rules as they were before issue 17 (the first commit that touched this file's tests).
OLD_RULES_COMMIT = "eb42350"


def subprocess_git_show(path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{OLD_RULES_COMMIT}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
