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
   exactly the gRPC calls runtime/registry.py declares (each service's ingress from its
   declared callers, each egress to its declared callees), the database, Redis and the LLM
   where used, Prometheus scrapes, and DNS through kube-dns and NodeLocal DNSCache.
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

The checks live in scripts/k8s_checks/, one module per concern; this file runs them and
re-exports what the tests use (they load it as the module `k8s_check`).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The repository (runtime, services, gateway) and scripts/ (the k8s_checks package).
for _path in (str(ROOT), str(ROOT / "scripts")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from k8s_checks import database, deploy, network, observability, programs, workload_checks  # noqa: E402
from k8s_checks.common import (  # noqa: E402
    ALERT_TESTS,
    ALERTS,
    DASHBOARD,
    DOCKERFILE,
    FIELD_PLACEHOLDERS,
    K8S,
    MIGRATION_COMPONENT,
    OVERLAYS,
    PGBOUNCER_COMPONENT,
    CheckFailed,
)
from k8s_checks.database import check_readme_pool_table, pool_table  # noqa: E402
from k8s_checks.deploy import check_dockerfile, check_migration_component  # noqa: E402
from k8s_checks.driver import cross_check, main  # noqa: E402
from k8s_checks.network import allowed_edges, expected_edges  # noqa: E402
from k8s_checks.observability import (  # noqa: E402
    check_alert_rules,
    check_alert_tests,
    check_metric_names,
    check_operator_component,
)
from k8s_checks.programs import declared_calls, import_closure, program_for  # noqa: E402
from k8s_checks.rendering import (  # noqa: E402
    check_prod_values,
    render,
    render_overlay,
    render_with_operator_component,
    run_checkov,
    skips_without_reason,
    validate_schemas,
)
from k8s_checks.workload_checks import drain_plan, streamed_over_http  # noqa: E402
from k8s_checks.workloads import container_env, mesh_workloads  # noqa: E402

__all__ = [
    "ALERTS",
    "ALERT_TESTS",
    "DASHBOARD",
    "DOCKERFILE",
    "FIELD_PLACEHOLDERS",
    "K8S",
    "MIGRATION_COMPONENT",
    "OVERLAYS",
    "PGBOUNCER_COMPONENT",
    "CheckFailed",
    "allowed_edges",
    "check_alert_rules",
    "check_alert_tests",
    "check_dockerfile",
    "check_metric_names",
    "check_migration_component",
    "check_operator_component",
    "check_prod_values",
    "check_readme_pool_table",
    "container_env",
    "cross_check",
    "database",
    "declared_calls",
    "deploy",
    "drain_plan",
    "expected_edges",
    "import_closure",
    "main",
    "mesh_workloads",
    "network",
    "observability",
    "pool_table",
    "program_for",
    "programs",
    "render",
    "render_overlay",
    "render_with_operator_component",
    "run_checkov",
    "skips_without_reason",
    "streamed_over_http",
    "validate_schemas",
    "workload_checks",
]

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except CheckFailed as exc:
        print(f"FAIL {exc}")
        sys.exit(1)
