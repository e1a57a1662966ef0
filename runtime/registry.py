"""The mesh's processes in one table: what each one runs, where it listens, what it migrates
and which services it calls over gRPC.

Everything that used to keep its own list reads this one: meshctl (what `make run` starts,
on which ports, in which order), the migration command (which settings class and schema),
scripts/k8s_check.py (which NetworkPolicy edges must exist). The ports are the defaults the
settings classes declare; tests/runtime/test_registry.py holds the two in agreement, and the
declared calls in agreement with the `*_ADDR` settings each process reads.

The runtime never imports a service (services/* and gateway/ -> runtime): settings classes
are named by `module:Class` strings, imported only by whoever needs the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO_ROOT = Path(__file__).resolve().parents[1]

ProcessKind = Literal["grpc", "gateway"]


@dataclass(frozen=True)
class MeshProcess:
    """One process of the mesh, as `python -m <module>` runs it."""

    name: str
    module: str
    kind: ProcessKind
    # `module:Class`; the class's field defaults are the ports below.
    settings_class: str
    # The port it serves on: gRPC (GRPC_PORT) for a service, HTTP (GATEWAY_PORT) for the gateway.
    port: int
    # /metrics on its own port (METRICS_PORT, GATEWAY_METRICS_PORT).
    metrics_port: int
    # The Postgres schema it brings to head at start (and in its migration Job); None: no database.
    schema: str | None
    # The services it calls over gRPC, each through its `<NAME>_ADDR` setting.
    calls: tuple[str, ...]
    # `module:function` when Alembic does not own its schema: an async function that takes the
    # process's settings (an instance of settings_class) and brings the schema to head; the
    # migration command imports it by this name. None: Alembic, from migrations_dir.
    migrate: str | None = None
    # Whether it may keep state in Redis (the gateway's shared rate-limit counters, when
    # RATE_LIMIT_STORAGE_URL is redis://).
    redis: bool = False

    @property
    def needs_postgres(self) -> bool:
        return self.schema is not None

    @property
    def addr_env(self) -> str:
        """The variable its callers read its address from (AUTH_ADDR, ...)."""
        return f"{self.name.upper()}_ADDR"

    @property
    def local_addr(self) -> str:
        """Its address in a local mesh (`make run`): the default of its callers' `<NAME>_ADDR`."""
        return f"127.0.0.1:{self.port}"

    @property
    def package_dir(self) -> Path:
        return REPO_ROOT / self.module.replace(".", "/")

    @property
    def migrations_dir(self) -> Path:
        """Where its Alembic migrations live (none when `migrate` names its own function)."""
        return self.package_dir / "migrations"


_PUBLIC = ("auth", "sessions", "agent", "memory", "evals")

# Every gRPC service fetches the auth service's JWKS, follows its revocation feed and gets
# service tokens from it (runtime/server.py, runtime/service_identity.py); the auth service
# verifies its own tokens in-process.
PROCESSES: tuple[MeshProcess, ...] = (
    MeshProcess(
        name="auth",
        module="services.auth",
        kind="grpc",
        settings_class="services.auth.settings:AuthSettings",
        port=50051,
        metrics_port=9101,
        schema="auth",
        # Account deletion (EraseUserData) and ExportAccount reach every store of a user's data.
        calls=("sessions", "agent", "memory", "evals"),
    ),
    MeshProcess(
        name="sessions",
        module="services.sessions",
        kind="grpc",
        settings_class="services.sessions.settings:SessionsSettings",
        port=50052,
        metrics_port=9102,
        schema="sessions",
        # Deleting a session clears its conversation in the agent.
        calls=("auth", "agent"),
    ),
    MeshProcess(
        name="agent",
        module="services.agent",
        kind="grpc",
        settings_class="services.agent.settings:AgentSettings",
        port=50053,
        metrics_port=9103,
        # LangGraph's checkpointer creates these tables itself (no Alembic).
        schema="agent",
        migrate="services.agent.schema_migration:migrate_schema",
        # Session ownership, long-term memory search and writes, trace hand-off to evals.
        calls=("auth", "sessions", "memory", "evals"),
    ),
    MeshProcess(
        name="memory",
        module="services.memory",
        kind="grpc",
        settings_class="services.memory.settings:MemorySettings",
        port=50054,
        metrics_port=9104,
        schema="memory",
        calls=("auth",),
    ),
    MeshProcess(
        name="evals",
        module="services.evals",
        kind="grpc",
        settings_class="services.evals.settings:EvalsSettings",
        port=50055,
        metrics_port=9105,
        schema="evals",
        # Its settings also carry SESSIONS_ADDR, AGENT_ADDR and EVALS_ADDR: those are for the
        # command line (`python -m services.evals.client`), not calls of the server.
        calls=("auth",),
    ),
    MeshProcess(
        name="gateway",
        module="gateway",
        kind="gateway",
        settings_class="gateway.settings:GatewaySettings",
        port=8080,
        metrics_port=9100,
        schema=None,
        # It routes each public RPC to the service named in the proto's package, and
        # verifies tokens (rate-limit keys) with the auth service's JWKS.
        calls=_PUBLIC,
        redis=True,
    ),
)


def process(name: str) -> MeshProcess:
    for entry in PROCESSES:
        if entry.name == name:
            return entry
    raise KeyError(f"no mesh process named {name!r}; known: {', '.join(p.name for p in PROCESSES)}")


def grpc_services() -> tuple[MeshProcess, ...]:
    return tuple(entry for entry in PROCESSES if entry.kind == "grpc")


def callers_of(name: str) -> tuple[str, ...]:
    """Who calls `name` over gRPC: its NetworkPolicy's ingress sources."""
    return tuple(entry.name for entry in PROCESSES if name in entry.calls)


def start_order() -> tuple[MeshProcess, ...]:
    """The processes in the order a local mesh starts them: each after the services it calls,
    except one that calls it back (auth and the stores it erases, sessions and the agent):
    such a pair cannot both wait, and channels connect on first use, so the one started first
    just must not need the other during its own start-up. The table order breaks ties.
    Gives auth, sessions, memory, evals, agent, gateway."""
    pending = list(PROCESSES)
    started: list[MeshProcess] = []
    while pending:
        names = {entry.name for entry in started}
        for entry in pending:
            waits_for = {c for c in entry.calls if entry.name not in process(c).calls}
            if waits_for <= names:
                started.append(entry)
                pending.remove(entry)
                break
        else:
            raise ValueError(f"the calls of {[p.name for p in pending]} form a cycle longer than a pair")
    return tuple(started)


def _check_table() -> None:
    """A typo in the table (a call to a process that does not exist, a port used twice) stops
    every reader at import instead of surfacing as a missing NetworkPolicy edge."""
    names = [entry.name for entry in PROCESSES]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate process names in {names}")
    ports = [port for entry in PROCESSES for port in (entry.port, entry.metrics_port)]
    if len(set(ports)) != len(ports):
        raise ValueError(f"a default port is used twice: {ports}")
    for entry in PROCESSES:
        unknown = set(entry.calls) - {p.name for p in grpc_services()}
        if unknown or entry.name in entry.calls:
            raise ValueError(f"{entry.name} calls {sorted(unknown) or entry.name}: not another gRPC service")
        if entry.migrate is not None and (entry.schema is None or ":" not in entry.migrate):
            raise ValueError(f"{entry.name}: migrate={entry.migrate!r} needs a schema and a `module:function` name")


_check_table()
