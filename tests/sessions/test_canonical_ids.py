"""Every id has one spelling: sessions, agent, memory and evals refuse every other one.

Before: `uuid.UUID()` accepted upper case, no hyphens, braces and `urn:uuid:`; the agent
used the raw string as thread id and lock key, so two spellings of one session were two
conversations (both could run at once, and deleting the session left one behind).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.grpc_errors import rpc_failure
from tests.support.services import service_metadata
from tests.support.users import MeshUser

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def other_spellings(value: str) -> list[str]:
    parsed = uuid.UUID(value)
    return [value.upper(), parsed.hex, "{" + value + "}", parsed.urn]


@pytest.fixture
async def stubs(mesh: Mesh) -> AsyncIterator[dict[str, object]]:
    missing = {"sessions", "agent", "memory", "evals"} - set(mesh.processes)
    if missing:
        pytest.skip(f"MESH_ONLY leaves out {sorted(missing)}; this test needs the whole mesh")
    channels = {name: grpc.aio.insecure_channel(mesh.addr(name)) for name in ("sessions", "agent", "memory", "evals")}
    yield {
        "sessions": sessions_pb2_grpc.SessionServiceStub(channels["sessions"]),
        "agent": agent_pb2_grpc.AgentServiceStub(channels["agent"]),
        "memory": memory_pb2_grpc.MemoryServiceStub(channels["memory"]),
        "evals": evals_pb2_grpc.EvalServiceStub(channels["evals"]),
    }
    for channel in channels.values():
        await channel.close()


async def test_every_service_refuses_every_other_spelling(stubs, auth_stub, user: MeshUser) -> None:
    sessions = stubs["sessions"]
    agent = stubs["agent"]
    memory = stubs["memory"]
    evals = stubs["evals"]
    md = user.metadata
    as_agent = await service_metadata(auth_stub)  # RecordTrace is service-only
    session_id = (
        await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="ids"), metadata=md)
    ).session.session_id
    (event,) = (await memory.AddMemories(memory_pb2.AddMemoriesRequest(facts=["Collects stamps"]), metadata=md)).events
    memory_id = event.memory.memory_id
    message = agent_pb2.Message(role="user", content="hello")

    for spelling in other_spellings(session_id):
        calls = {
            "GetSession": sessions.GetSession(sessions_pb2.GetSessionRequest(session_id=spelling), metadata=md),
            "UpdateSession": sessions.UpdateSession(
                sessions_pb2.UpdateSessionRequest(session_id=spelling, name="x"), metadata=md
            ),
            "DeleteSession": sessions.DeleteSession(
                sessions_pb2.DeleteSessionRequest(session_id=spelling), metadata=md
            ),
            "Chat": agent.Chat(agent_pb2.ChatRequest(session_id=spelling, message=message), metadata=md),
            "GetHistory": agent.GetHistory(agent_pb2.GetHistoryRequest(session_id=spelling), metadata=md),
            "ClearHistory": agent.ClearHistory(agent_pb2.ClearHistoryRequest(session_id=spelling), metadata=md),
            "AddMemories(session_id)": memory.AddMemories(
                memory_pb2.AddMemoriesRequest(facts=["Likes tea"], session_id=spelling), metadata=md
            ),
            "RecordTrace(session_id)": evals.RecordTrace(
                evals_pb2.RecordTraceRequest(
                    trace=evals_pb2.Trace(trace_id=str(uuid.uuid4()), session_id=spelling, input="q", output="a")
                ),
                metadata=as_agent,
            ),
        }
        for name, call in calls.items():
            failure = await rpc_failure(call)
            assert (failure.code, failure.reason) == (INVALID, "SESSION_ID_INVALID"), (name, spelling)

        stream = agent.StreamChat(agent_pb2.StreamChatRequest(session_id=spelling, message=message), metadata=md)
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in stream:
                pass
        assert streamed.value.code() == INVALID, spelling

    for spelling in other_spellings(memory_id):
        failure = await rpc_failure(
            memory.DeleteMemory(memory_pb2.DeleteMemoryRequest(memory_id=spelling), metadata=md)
        )
        assert (failure.code, failure.reason) == (INVALID, "MEMORY_ID_INVALID"), spelling

    for spelling in other_spellings(str(uuid.uuid4())):
        trace = evals_pb2.Trace(trace_id=spelling, input="q", output="a")
        failure = await rpc_failure(evals.RecordTrace(evals_pb2.RecordTraceRequest(trace=trace), metadata=as_agent))
        assert (failure.code, failure.reason) == (INVALID, "TRACE_ID_INVALID"), spelling

    # The canonical spelling still works everywhere, and nothing above changed anything.
    got = await sessions.GetSession(sessions_pb2.GetSessionRequest(session_id=session_id), metadata=md)
    assert got.session.name == "ids"
    await memory.DeleteMemory(memory_pb2.DeleteMemoryRequest(memory_id=memory_id), metadata=md)
