"""Alerts, their promtool tests, metric names, the Prometheus operator component."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import grpc
import yaml

from .common import (
    ALERT_TESTS,
    ALERTS,
    DASHBOARD,
    PROMETHEUS_RULE,
    ROOT,
    RUNBOOK_URL_PREFIX,
    RUNBOOKS,
    SEVERITIES,
    CheckFailed,
    Doc,
    by_kind,
    describe,
    selects,
)


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
    """Every metric the services, the runtime and the gateway define (prometheus_client constructors). A
    name built in an f-string (`f"{p}_retries_total"`, one set per service) matches any
    metric-name text where its placeholders are."""
    patterns: list[re.Pattern[str]] = []
    for folder in (ROOT / "services", ROOT / "runtime", ROOT / "gateway"):
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
                problems.append(f"{where}: metric {name} is defined nowhere in services/, runtime/ or gateway/")
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
