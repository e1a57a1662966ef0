"""Runs every check over every overlay and optional component."""

from __future__ import annotations

from .common import (
    KUBERNETES_VERSION,
    MIGRATION_COMPONENT,
    OPERATOR_COMPONENT,
    OVERLAYS,
    PGBOUNCER_COMPONENT,
    PROMETHEUS_RULE,
    REGISTRY_COMPONENT,
    ROOT,
    CheckFailed,
    Doc,
)
from .database import check_database_connections, check_readme_pool_table, format_pool_table
from .deploy import (
    check_dockerfile,
    check_migration_component,
    check_no_jobs,
    check_pod_security,
    check_redis,
    check_replicas_and_scaling,
    check_shared_config,
)
from .network import check_network_policies
from .observability import (
    check_alert_rules,
    check_alert_tests,
    check_metric_names,
    check_operator_component,
    write_prometheus_rule,
)
from .rendering import check_prod_values, render_overlay, run_checkov, skips_without_reason, validate_schemas
from .workload_checks import caller_deadlines, check_services, check_workload
from .workloads import mesh_workloads

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
