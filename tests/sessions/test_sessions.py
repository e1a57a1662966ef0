"""Sessions CRUD and paging, always scoped to the caller."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser


@pytest.fixture
async def sessions(mesh: Mesh) -> AsyncIterator[sessions_pb2_grpc.SessionServiceStub]:
    async with grpc.aio.insecure_channel(mesh.addr("sessions")) as channel:
        yield sessions_pb2_grpc.SessionServiceStub(channel)


async def test_create_get_rename_list_delete(sessions, user: MeshUser, mesh: Mesh) -> None:
    created = (
        await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="  Recipes "), metadata=user.metadata)
    ).session
    uuid.UUID(created.session_id)
    assert created.name == "Recipes"
    assert created.user_id == user.user_id
    assert created.created_at.ToDatetime() == created.updated_at.ToDatetime()

    got = await sessions.GetSession(
        sessions_pb2.GetSessionRequest(session_id=created.session_id), metadata=user.metadata
    )
    assert got.session == created

    renamed = await sessions.UpdateSession(
        sessions_pb2.UpdateSessionRequest(session_id=created.session_id, name="Dinner"), metadata=user.metadata
    )
    assert renamed.session.name == "Dinner"
    assert renamed.session.updated_at.ToDatetime() > created.updated_at.ToDatetime()

    listed = await sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=user.metadata)
    assert [s.session_id for s in listed.sessions] == [created.session_id]

    if "agent" not in mesh.processes:
        pytest.skip("MESH_ONLY leaves out the agent, which deleting a session clears the conversation in")
    await sessions.DeleteSession(
        sessions_pb2.DeleteSessionRequest(session_id=created.session_id), metadata=user.metadata
    )
    failure = await rpc_failure(
        sessions.GetSession(sessions_pb2.GetSessionRequest(session_id=created.session_id), metadata=user.metadata)
    )
    assert failure.code == grpc.StatusCode.NOT_FOUND


async def test_paging_walks_every_session_once_newest_first(sessions, user: MeshUser) -> None:
    made = []
    for index in range(7):
        request = sessions_pb2.CreateSessionRequest(name=f"s{index}")
        made.append((await sessions.CreateSession(request, metadata=user.metadata)).session.session_id)
    seen, token, pages = [], "", 0
    while True:
        page = await sessions.ListSessions(
            sessions_pb2.ListSessionsRequest(page_size=3, page_token=token), metadata=user.metadata
        )
        seen += [s.session_id for s in page.sessions]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(made))


async def test_another_users_session_is_not_found(sessions, user: MeshUser, other_user: MeshUser) -> None:
    mine = (
        await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="mine"), metadata=user.metadata)
    ).session
    calls = [
        sessions.GetSession(sessions_pb2.GetSessionRequest(session_id=mine.session_id), metadata=other_user.metadata),
        sessions.UpdateSession(
            sessions_pb2.UpdateSessionRequest(session_id=mine.session_id, name="stolen"), metadata=other_user.metadata
        ),
        sessions.DeleteSession(
            sessions_pb2.DeleteSessionRequest(session_id=mine.session_id), metadata=other_user.metadata
        ),
    ]
    for call in calls:
        failure = await rpc_failure(call)
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    others = await sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=other_user.metadata)
    assert mine.session_id not in [s.session_id for s in others.sessions]
    still = await sessions.GetSession(
        sessions_pb2.GetSessionRequest(session_id=mine.session_id), metadata=user.metadata
    )
    assert still.session.name == "mine"


@pytest.mark.parametrize("session_id", ["", "not-a-uuid", "1234", "'; DROP TABLE sessions; --"])
async def test_malformed_session_ids_are_invalid_argument(sessions, user: MeshUser, session_id: str) -> None:
    failure = await rpc_failure(
        sessions.GetSession(sessions_pb2.GetSessionRequest(session_id=session_id), metadata=user.metadata)
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_names_are_validated(sessions, user: MeshUser) -> None:
    too_long = await rpc_failure(
        sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="x" * 101), metadata=user.metadata)
    )
    assert (too_long.code, too_long.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NAME_TOO_LONG")
    control = await rpc_failure(
        sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="bad\x00name"), metadata=user.metadata)
    )
    assert control.code == grpc.StatusCode.INVALID_ARGUMENT
    session = (await sessions.CreateSession(sessions_pb2.CreateSessionRequest(), metadata=user.metadata)).session
    assert session.name == ""
    empty = await rpc_failure(
        sessions.UpdateSession(
            sessions_pb2.UpdateSessionRequest(session_id=session.session_id, name="   "), metadata=user.metadata
        )
    )
    assert (empty.code, empty.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NAME_REQUIRED")


@pytest.mark.parametrize(("size", "token"), [(-1, ""), (101, ""), (10, "not*a*token"), (10, "bm90IGpzb24")])
async def test_bad_paging_is_invalid_argument(sessions, user: MeshUser, size: int, token: str) -> None:
    failure = await rpc_failure(
        sessions.ListSessions(
            sessions_pb2.ListSessionsRequest(page_size=size, page_token=token), metadata=user.metadata
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_calls_without_a_token_are_unauthenticated(sessions) -> None:
    failure = await rpc_failure(sessions.ListSessions(sessions_pb2.ListSessionsRequest()))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED


async def test_delete_fails_whole_when_the_conversation_cannot_be_cleared(mesh: Mesh, user: MeshUser) -> None:
    """With the agent unreachable the session must stay: no orphaned conversation."""
    instance = mesh.start_service("sessions", instance="-no-agent", AGENT_ADDR="127.0.0.1:1")
    try:
        async with grpc.aio.insecure_channel(instance.addr) as channel:
            stub = sessions_pb2_grpc.SessionServiceStub(channel)
            session = (
                await stub.CreateSession(sessions_pb2.CreateSessionRequest(name="keep"), metadata=user.metadata)
            ).session
            failure = await rpc_failure(
                stub.DeleteSession(
                    sessions_pb2.DeleteSessionRequest(session_id=session.session_id), metadata=user.metadata
                )
            )
            assert failure.code == grpc.StatusCode.UNAVAILABLE
            kept = await stub.GetSession(
                sessions_pb2.GetSessionRequest(session_id=session.session_id), metadata=user.metadata
            )
            assert kept.session.name == "keep"
    finally:
        instance.stop()
        mesh.processes.pop("sessions-no-agent", None)
