"""Database connections: each pool at the HPAs' maxima within the database's budget."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .common import GRPC_SERVICES, README, Doc, by_kind, describe
from .programs import server_modules
from .workloads import Workload, load_program_settings, mesh_workloads, setting

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
