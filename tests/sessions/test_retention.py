"""Session retention (AIP-214 expire_time) and UpdateSession's AIP form.

Before: sessions had no expiry, nothing was ever deleted by age, and UpdateSession only
took the flat `name` (the AIP `session` + `update_mask` form was refused).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser
from tests.support.waiting import eventually

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def sessions(mesh: Mesh) -> AsyncIterator[sessions_pb2_grpc.SessionServiceStub]:
    async with grpc.aio.insecure_channel(mesh.addr("sessions")) as channel:
        yield sessions_pb2_grpc.SessionServiceStub(channel)


@pytest.fixture
async def db(mesh: Mesh) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(mesh.env["DATABASE_URL"])
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
def idle_sweeper(mesh: Mesh) -> Iterator[ChildProcess]:
    """A replica whose sweeper ran once at start and then sleeps for an hour."""
    replica = mesh.start_service("sessions", instance="-nosweep", SESSION_SWEEP_INTERVAL_S="3600")
    yield replica
    replica.stop()


@pytest.fixture
def busy_sweeper_agent_down(mesh: Mesh) -> Iterator[ChildProcess]:
    """A replica sweeping every 0.2 s whose agent service cannot be reached; stopped after
    its test, or it would keep taking later tests' expired sessions and failing their clears."""
    replica = mesh.start_service(
        "sessions", instance="-sweep", SESSION_SWEEP_INTERVAL_S="0.2", AGENT_ADDR="127.0.0.1:9"
    )
    yield replica
    replica.stop()


def ttl(seconds: float) -> Duration:
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


def timestamp(at: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(at)
    return value


async def row_exists(db: asyncpg.Connection, session_id: str) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE id = $1", uuid.UUID(session_id)))


async def test_expire_time_and_ttl_on_create(sessions, user: MeshUser) -> None:
    md = user.metadata
    never = (await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="n"), metadata=md)).session
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    fixed = (
        await sessions.CreateSession(
            sessions_pb2.CreateSessionRequest(name="f", expire_time=timestamp(at)), metadata=md
        )
    ).session
    before = datetime.now(UTC)
    lived = (await sessions.CreateSession(sessions_pb2.CreateSessionRequest(ttl=ttl(3600)), metadata=md)).session

    assert not never.HasField("expire_time")  # SESSION_TTL_S defaults to 0: never
    assert fixed.expire_time.ToDatetime(tzinfo=UTC) == at
    expires = lived.expire_time.ToDatetime(tzinfo=UTC)
    assert before + timedelta(seconds=3590) < expires < datetime.now(UTC) + timedelta(seconds=3610)

    past = timestamp(datetime.now(UTC) - timedelta(seconds=5))
    for request, reason in [
        (sessions_pb2.CreateSessionRequest(expire_time=past), "EXPIRE_TIME_INVALID"),
        (sessions_pb2.CreateSessionRequest(ttl=ttl(-1)), "TTL_INVALID"),
        (sessions_pb2.CreateSessionRequest(expire_time=timestamp(at), ttl=ttl(60)), "EXPIRE_TIME_CONFLICT"),
    ]:
        failure = await rpc_failure(sessions.CreateSession(request, metadata=md))
        assert (failure.code, failure.reason) == (INVALID, reason)


async def test_expired_session_is_gone_before_any_sweep(idle_sweeper, db, user: MeshUser) -> None:
    async with grpc.aio.insecure_channel(idle_sweeper.addr) as channel:
        stub = sessions_pb2_grpc.SessionServiceStub(channel)
        md = user.metadata
        session = (
            await stub.CreateSession(sessions_pb2.CreateSessionRequest(name="brief", ttl=ttl(1)), metadata=md)
        ).session
        kept = (await stub.CreateSession(sessions_pb2.CreateSessionRequest(name="kept"), metadata=md)).session
        await stub.GetSession(sessions_pb2.GetSessionRequest(session_id=session.session_id), metadata=md)

        async def expired() -> None:
            failure = await rpc_failure(
                stub.GetSession(sessions_pb2.GetSessionRequest(session_id=session.session_id), metadata=md)
            )
            assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")

        await eventually(expired, timeout_s=10)
        listed = await stub.ListSessions(sessions_pb2.ListSessionsRequest(page_size=100), metadata=md)
        renamed = await rpc_failure(
            stub.UpdateSession(
                sessions_pb2.UpdateSessionRequest(session_id=session.session_id, name="back"), metadata=md
            )
        )
        deleted = await rpc_failure(
            stub.DeleteSession(sessions_pb2.DeleteSessionRequest(session_id=session.session_id), metadata=md)
        )

    assert [s.session_id for s in listed.sessions] == [kept.session_id]
    assert renamed.code == deleted.code == grpc.StatusCode.NOT_FOUND
    # Not swept yet: the row is still there, and still invisible.
    assert await row_exists(db, session.session_id)


async def test_sweeper_keeps_retrying_the_clear_while_the_agent_is_down(
    busy_sweeper_agent_down, db, user: MeshUser
) -> None:
    async with grpc.aio.insecure_channel(busy_sweeper_agent_down.addr) as channel:
        stub = sessions_pb2_grpc.SessionServiceStub(channel)
        session = (
            await stub.CreateSession(sessions_pb2.CreateSessionRequest(ttl=ttl(0.5)), metadata=user.metadata)
        ).session
        kept = (await stub.CreateSession(sessions_pb2.CreateSessionRequest(), metadata=user.metadata)).session

    async def pending_with_retries() -> None:
        clear = await db.fetchrow(
            "SELECT user_id, attempts, last_error FROM sessions.conversation_clears WHERE session_id = $1",
            uuid.UUID(session.session_id),
        )
        assert clear is not None
        assert str(clear["user_id"]) == user.user_id
        assert clear["attempts"] >= 2
        assert clear["last_error"] == "UNAVAILABLE"

    await eventually(pending_with_retries, timeout_s=20, interval_s=0.2)
    # The expired row (invisible to its owner) stays until the agent confirms the clear.
    assert await row_exists(db, session.session_id)
    assert await row_exists(db, kept.session_id)


async def test_update_session_aip_form_and_flat_form(sessions, user: MeshUser) -> None:
    md = user.metadata
    created = (await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="a"), metadata=md)).session
    sid = created.session_id
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)

    renamed = await sessions.UpdateSession(
        sessions_pb2.UpdateSessionRequest(
            session_id=sid, session=sessions_pb2.Session(name="b"), update_mask=FieldMask(paths=["name"])
        ),
        metadata=md,
    )
    expiring = await sessions.UpdateSession(
        sessions_pb2.UpdateSessionRequest(
            session=sessions_pb2.Session(session_id=sid, name="ignored", expire_time=timestamp(at)),
            update_mask=FieldMask(paths=["expire_time"]),
        ),
        metadata=md,
    )
    never = await sessions.UpdateSession(
        sessions_pb2.UpdateSessionRequest(
            session_id=sid, session=sessions_pb2.Session(), update_mask=FieldMask(paths=["expire_time"])
        ),
        metadata=md,
    )
    flat = await sessions.UpdateSession(sessions_pb2.UpdateSessionRequest(session_id=sid, name="c"), metadata=md)

    assert renamed.session.name == "b"
    assert (expiring.session.name, expiring.session.expire_time.ToDatetime(tzinfo=UTC)) == ("b", at)
    assert not never.session.HasField("expire_time")
    assert flat.session.name == "c"

    for request, reason in [
        (
            sessions_pb2.UpdateSessionRequest(
                session_id=sid, session=sessions_pb2.Session(name="x"), update_mask=FieldMask(paths=["user_id"])
            ),
            "UPDATE_MASK_INVALID",
        ),
        (
            sessions_pb2.UpdateSessionRequest(
                session_id=sid, session=sessions_pb2.Session(session_id=str(uuid.uuid4()))
            ),
            "SESSION_ID_MISMATCH",
        ),
        (sessions_pb2.UpdateSessionRequest(session_id=sid, session=sessions_pb2.Session()), "UPDATE_MASK_EMPTY"),
        (sessions_pb2.UpdateSessionRequest(session_id=sid), "NAME_REQUIRED"),
    ]:
        failure = await rpc_failure(sessions.UpdateSession(request, metadata=md))
        assert (failure.code, failure.reason) == (INVALID, reason)


async def test_sweeper_deletes_an_expired_session_with_its_conversation(
    mesh: Mesh, sessions, db, user: MeshUser
) -> None:
    if "agent" not in mesh.processes:
        pytest.skip("MESH_ONLY leaves out the agent service")
    sweeper = mesh.start_service("sessions", instance="-sweep-agent", SESSION_SWEEP_INTERVAL_S="0.2")
    try:
        async with grpc.aio.insecure_channel(mesh.addr("agent")) as channel:
            agent = agent_pb2_grpc.AgentServiceStub(channel)
            session = (
                await sessions.CreateSession(sessions_pb2.CreateSessionRequest(ttl=ttl(8)), metadata=user.metadata)
            ).session
            await agent.Chat(
                agent_pb2.ChatRequest(
                    session_id=session.session_id, message=agent_pb2.Message(role="user", content="I like tea")
                ),
                metadata=user.metadata,
                timeout=30,
            )
            sid = uuid.UUID(session.session_id)
            stored = await db.fetchval(
                "SELECT count(*) FROM agent.checkpoints WHERE thread_id = $1", session.session_id
            )
            assert stored > 0

            async def cleared() -> None:
                assert not await row_exists(db, session.session_id)
                pending = await db.fetchval(
                    "SELECT count(*) FROM sessions.conversation_clears WHERE session_id = $1",
                    uuid.UUID(session.session_id),
                )
                assert pending == 0

            await eventually(cleared, timeout_s=40, interval_s=0.2)
            threads = await db.fetchval(
                "SELECT count(*) FROM agent.checkpoints WHERE thread_id = $1", session.session_id
            )
            runs = await db.fetchval("SELECT count(*) FROM agent.runs WHERE session_id = $1", sid)
            assert (threads, runs) == (0, 0)
    finally:
        await asyncio.to_thread(sweeper.stop)
