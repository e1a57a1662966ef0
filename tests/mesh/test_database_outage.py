"""Issue 16, "fail fast, report honestly": a database that stops answering makes calls fail
UNAVAILABLE (DATABASE_UNAVAILABLE) within the configured bound instead of hanging, health
goes NOT_SERVING, and everything comes back by itself, with no process restarted.

Real processes on a Postgres of their own (an embedded server in a temp dir), so freezing it
(SIGSTOP on the postmaster and its children) or restarting it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg_pool import AsyncConnectionPool

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from bench.postgres_faults import postgres_frozen, restart_postgres
from meshctl.mesh import Mesh
from meshctl.postgres import stop_embedded_postgres
from runtime.database import database_wait_bound_s
from runtime.embedded_pg import embedded_database_url
from runtime.settings import CommonSettings
from services.agent.run_rows import RunRow
from services.agent.run_store import RunStore
from tests.support.grpc_errors import error_reason
from tests.support.mesh import TEST_ENV
from tests.support.users import MeshUser, register_user
from tests.support.waiting import eventually

# Tight bounds, so the test is quick; the assertions read them back, nothing is hard-coded.
BOUNDS = {
    "DB_STATEMENT_TIMEOUT_S": "1",
    "DB_CONNECT_ATTEMPT_TIMEOUT_S": "2",
    "DB_POOL_TIMEOUT_S": "2",
    "DB_HEALTH_INTERVAL_S": "0.5",
    "DB_HEALTH_TIMEOUT_S": "1",
}
SETTINGS = CommonSettings(**{key.lower(): value for key, value in BOUNDS.items()})  # type: ignore[arg-type]
CALL_BOUND_S = database_wait_bound_s(SETTINGS)
# Scheduling slack on a loaded 2-core machine: the RPC's own hops, not database waits.
SLACK_S = 1.5
# How long health may take to notice: one probe interval, then a probe that overstays its timeout.
HEALTH_NOTICE_S = SETTINGS.db_health_interval_s + SETTINGS.db_health_timeout_s + SLACK_S
SERVICES = {
    "auth": "agentmesh.auth.v1.AuthService",
    "sessions": "agentmesh.sessions.v1.SessionService",
    "agent": "agentmesh.agent.v1.AgentService",
}


@pytest.fixture(scope="module")
def outage_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, Path]]:
    base = tmp_path_factory.mktemp("outage")
    url = embedded_database_url(base / "db")
    mesh = Mesh(
        data_dir=base / "data",
        log_dir=base / "logs",
        ephemeral_ports=True,
        extra_env={**TEST_ENV, **BOUNDS, "DATABASE_URL": url, "MEMORY_ENABLED": "false", "EVALS_ENABLED": "false"},
    )
    try:
        mesh.start(list(SERVICES))
        yield mesh, (base / "db" / "pgdata").resolve()
    finally:
        mesh.stop()
        # This Postgres is the test's own: stopped here, not left to pgserver's exit hook.
        stop_embedded_postgres(base / "db")


@pytest.fixture
async def channels(outage_mesh: tuple[Mesh, Path]) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    mesh, _ = outage_mesh
    opened = {name: grpc.aio.insecure_channel(mesh.addr(name)) for name in SERVICES}
    yield opened
    for channel in opened.values():
        await channel.close()


async def health_of(channel: grpc.aio.Channel, service: str) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


def database_calls(channels: dict[str, grpc.aio.Channel], user: MeshUser, session_id: str) -> dict[str, Any]:
    """One call per service that needs its database."""
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    sessions = sessions_pb2_grpc.SessionServiceStub(channels["sessions"])
    agent = agent_pb2_grpc.AgentServiceStub(channels["agent"])
    deadline = CALL_BOUND_S + 30  # far past the bound: a hang shows as DEADLINE_EXCEEDED
    return {
        "auth": lambda: auth.Login(
            auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD), timeout=deadline
        ),
        "sessions": lambda: sessions.ListSessions(
            sessions_pb2.ListSessionsRequest(), metadata=user.metadata, timeout=deadline
        ),
        "agent": lambda: agent.ListRuns(
            agent_pb2.ListRunsRequest(session_id=session_id), metadata=user.metadata, timeout=deadline
        ),
    }


async def timed_failure(call: Callable[[], Awaitable[object]]) -> tuple[float, grpc.StatusCode, str]:
    started = time.monotonic()
    try:
        await call()
    except grpc.aio.AioRpcError as exc:
        return time.monotonic() - started, exc.code(), error_reason(exc)
    raise AssertionError("the call succeeded while the database was frozen")


async def all_serving(channels: dict[str, grpc.aio.Channel]) -> None:
    for name, service in SERVICES.items():
        assert await health_of(channels[name], service) == health_pb2.HealthCheckResponse.SERVING, name


async def all_succeed(calls: dict[str, Callable[[], Awaitable[object]]]) -> None:
    for name, call in calls.items():
        try:
            await call()
        except grpc.aio.AioRpcError as exc:
            raise AssertionError(f"{name}: {exc.code().name} {error_reason(exc)}") from None


async def test_frozen_database_fails_fast_reports_not_serving_and_heals(
    outage_mesh: tuple[Mesh, Path], channels: dict[str, grpc.aio.Channel]
) -> None:
    mesh, pgdata = outage_mesh
    pids = {name: child.pid for name, child in mesh.processes.items()}
    user = await register_user(auth_pb2_grpc.AuthServiceStub(channels["auth"]))
    session = await sessions_pb2_grpc.SessionServiceStub(channels["sessions"]).CreateSession(
        sessions_pb2.CreateSessionRequest(), metadata=user.metadata, timeout=10
    )
    calls = database_calls(channels, user, session.session.session_id)
    await all_succeed(calls)
    await all_serving(channels)

    with postgres_frozen(pgdata):
        # Two rounds: the first meets pooled connections that must time out, the second
        # new connections that cannot be opened.
        for _ in range(2):
            failures = await asyncio.gather(*(timed_failure(call) for call in calls.values()))
            for name, (elapsed, code, reason) in zip(calls, failures, strict=True):
                assert code == grpc.StatusCode.UNAVAILABLE, (name, code, reason)
                assert elapsed <= CALL_BOUND_S + SLACK_S, (name, elapsed, CALL_BOUND_S)
                if name != "agent":  # the agent asks sessions first, whose failure it relays
                    assert reason == "DATABASE_UNAVAILABLE", (name, reason)

        async def none_serving() -> None:
            for name, service in SERVICES.items():
                assert await health_of(channels[name], service) == health_pb2.HealthCheckResponse.NOT_SERVING, name
                # Liveness ("") stays SERVING: restarting the process would cure nothing.
                assert await health_of(channels[name], "") == health_pb2.HealthCheckResponse.SERVING, name

        await eventually(none_serving, timeout_s=HEALTH_NOTICE_S + CALL_BOUND_S, interval_s=0.2)

    # Back by itself: SERVING within a probe or two, calls succeed, nobody was restarted.
    await eventually(lambda: all_serving(channels), timeout_s=HEALTH_NOTICE_S + CALL_BOUND_S, interval_s=0.2)
    await eventually(lambda: all_succeed(calls), timeout_s=CALL_BOUND_S, interval_s=0.2)
    assert {name: child.pid for name, child in mesh.processes.items()} == pids
    assert all(child.running() for child in mesh.processes.values())


async def test_restarted_database_is_used_again_without_restarts(
    outage_mesh: tuple[Mesh, Path], channels: dict[str, grpc.aio.Channel]
) -> None:
    """Every pooled connection dies with the server: the pools replace them (pre-ping in
    SQLAlchemy, the checkout check in the agent's psycopg pool), so calls succeed at once."""
    mesh, pgdata = outage_mesh
    pids = {name: child.pid for name, child in mesh.processes.items()}
    user = await register_user(auth_pb2_grpc.AuthServiceStub(channels["auth"]))
    session = await sessions_pb2_grpc.SessionServiceStub(channels["sessions"]).CreateSession(
        sessions_pb2.CreateSessionRequest(), metadata=user.metadata, timeout=10
    )
    calls = database_calls(channels, user, session.session.session_id)
    await all_succeed(calls)

    await asyncio.to_thread(restart_postgres, pgdata)

    # No failed call after the restart: stale connections never reach a caller.
    await all_succeed(calls)
    await all_succeed(calls)
    await eventually(lambda: all_serving(channels), timeout_s=HEALTH_NOTICE_S, interval_s=0.2)
    assert {name: child.pid for name, child in mesh.processes.items()} == pids


async def test_only_runs_still_executing_keep_their_lease(outage_mesh: tuple[Mesh, Path]) -> None:
    """A run whose execution died (its end could not be written while the database was frozen:
    the chaos suite's Postgres freeze left one) must not keep its lease, or its session stays
    busy until the process restarts; renewing only what executes lets it be failed as lost."""
    mesh, _ = outage_mesh
    pool = AsyncConnectionPool(
        mesh.env["DATABASE_URL"],
        min_size=1,
        max_size=2,
        kwargs={"autocommit": True, "options": "-c search_path=agent"},
        open=False,
    )
    await pool.open(wait=True)
    try:
        store = RunStore(pool, lease_s=30)

        async def new_run() -> RunRow | None:
            return await store.insert(
                session_id=str(uuid.uuid4()),
                user_id=str(uuid.uuid4()),
                content="hello",
                strategy="reject",
                owner="replica-a",
                max_active_per_user=4,
            )

        orphan, alive = await new_run(), await new_run()
        assert orphan is not None and alive is not None
        renewed = await store.renew_leases("replica-a", [alive.run_id])
        assert set(renewed) == {alive.run_id}
    finally:
        await pool.close()
