"""An upstream's ErrorInfo reason and metadata survive a hop (runtime/errors.py).

Before: `error_from_rpc` rebuilt the error from the status code alone, so Chat on another
user's session answered NOT_FOUND where GetSession answers SESSION_NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from runtime.errors import NotFound, ResourceExhausted, Unavailable, error_from_rpc, upstream_error_info
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser


def failed_call(
    code: grpc.StatusCode, details: str, *, status: status_pb2.Status | None = None, raw: bytes | None = None
) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if status is not None:
        trailing.add("grpc-status-details-bin", status.SerializeToString())
    if raw is not None:
        trailing.add("grpc-status-details-bin", raw)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


def status_with(code: grpc.StatusCode, reason: str, **metadata: str) -> status_pb2.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="agentmesh", metadata=metadata))
    return status_pb2.Status(code=code.value[0], message="m", details=[detail])


def test_reason_and_metadata_pass_through() -> None:
    exc = failed_call(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "too many sessions",
        status=status_with(grpc.StatusCode.RESOURCE_EXHAUSTED, "SESSION_QUOTA_EXCEEDED", limit="1000"),
    )
    error = error_from_rpc(exc, what="the sessions service")
    assert isinstance(error, ResourceExhausted)
    assert (error.message, error.reason, error.metadata) == (
        "too many sessions",
        "SESSION_QUOTA_EXCEEDED",
        {"limit": "1000"},
    )


def test_without_details_the_code_default_stays() -> None:
    error = error_from_rpc(failed_call(grpc.StatusCode.NOT_FOUND, "gone"), what="x")
    assert isinstance(error, NotFound)
    assert error.reason == "NOT_FOUND"


@pytest.mark.parametrize(
    "exc",
    [
        failed_call(grpc.StatusCode.NOT_FOUND, "gone", raw=b"\xff\xff not a status"),
        # A status whose code disagrees with the call's is not the upstream's own.
        failed_call(grpc.StatusCode.NOT_FOUND, "gone", status=status_with(grpc.StatusCode.INTERNAL, "SECRET")),
    ],
)
def test_unusable_details_are_ignored(exc: grpc.aio.AioRpcError) -> None:
    assert upstream_error_info(exc) is None
    assert error_from_rpc(exc, what="x").reason == "NOT_FOUND"


def test_transport_failures_stay_unavailable_without_upstream_detail() -> None:
    exc = failed_call(
        grpc.StatusCode.INTERNAL, "boom", status=status_with(grpc.StatusCode.INTERNAL, "DB_DOWN", dsn="secret")
    )
    error = error_from_rpc(exc, what="the memory service")
    assert isinstance(error, Unavailable)
    assert (error.reason, error.metadata) == ("UNAVAILABLE", {})


@pytest.fixture
async def agent_and_sessions(
    mesh: Mesh,
) -> AsyncIterator[tuple[agent_pb2_grpc.AgentServiceStub, sessions_pb2_grpc.SessionServiceStub]]:
    async with (
        grpc.aio.insecure_channel(mesh.addr("agent")) as agent_channel,
        grpc.aio.insecure_channel(mesh.addr("sessions")) as sessions_channel,
    ):
        yield agent_pb2_grpc.AgentServiceStub(agent_channel), sessions_pb2_grpc.SessionServiceStub(sessions_channel)


async def test_chat_on_another_users_session_says_session_not_found(
    agent_and_sessions, user: MeshUser, other_user: MeshUser
) -> None:
    agent, sessions = agent_and_sessions
    theirs = (
        await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="mine"), metadata=other_user.metadata)
    ).session.session_id
    message = agent_pb2.Message(role="user", content="hello")

    direct = await rpc_failure(
        sessions.GetSession(sessions_pb2.GetSessionRequest(session_id=theirs), metadata=user.metadata)
    )
    chat = await rpc_failure(
        agent.Chat(agent_pb2.ChatRequest(session_id=theirs, message=message), metadata=user.metadata)
    )
    history = await rpc_failure(
        agent.GetHistory(agent_pb2.GetHistoryRequest(session_id=theirs), metadata=user.metadata)
    )

    assert (direct.code, direct.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    assert (chat.code, chat.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    assert (history.code, history.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
