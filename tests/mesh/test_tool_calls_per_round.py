"""MAX_TOOL_CALLS_PER_ROUND: a model round that asks for more tool calls than allowed runs
the first ones and answers the rest "not run", so the model knows and the turn goes on.

Before: every call the model asked for ran, however many (the offline model now makes
parallel calls for ";"-separated calculations, as real models with parallel tool calls do).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.support.users import MeshUser

LIMIT = 2


@pytest.fixture(scope="module")
def limited_agent(mesh: Mesh) -> Iterator[ChildProcess]:
    if "agent" not in mesh.processes:
        pytest.skip("MESH_ONLY leaves out the agent service")
    agent = mesh.start_service("agent", instance="-toolcap", MAX_TOOL_CALLS_PER_ROUND=str(LIMIT))
    yield agent
    agent.stop()


@pytest.fixture
async def stubs(mesh: Mesh, limited_agent: ChildProcess) -> AsyncIterator[tuple]:
    async with (
        grpc.aio.insecure_channel(limited_agent.addr) as agent_channel,
        grpc.aio.insecure_channel(mesh.addr("sessions")) as sessions_channel,
    ):
        yield agent_pb2_grpc.AgentServiceStub(agent_channel), sessions_pb2_grpc.SessionServiceStub(sessions_channel)


async def test_calls_past_the_limit_are_answered_not_run(stubs, user: MeshUser) -> None:
    agent, sessions = stubs
    session_id = (
        await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="tools"), metadata=user.metadata)
    ).session.session_id
    request = agent_pb2.StreamChatRequest(
        session_id=session_id, message=agent_pb2.Message(role="user", content="what is 1+1; 2+3; 4+4; 5+6?")
    )

    events = [e async for e in agent.StreamChat(request, metadata=user.metadata, timeout=60)]
    calls = [e.tool_call for e in events if e.HasField("tool_call")]
    results = [e.tool_result for e in events if e.HasField("tool_result")]
    answer = "".join(e.token.text for e in events if e.HasField("token"))

    assert [c.name for c in calls] == ["calculator"] * 4
    assert [r.id for r in results] == [c.id for c in calls]
    assert [r.content for r in results[:LIMIT]] == ["2", "5"]
    assert all(r.content.startswith(f"Not run: at most {LIMIT} tool calls per round") for r in results[LIMIT:])
    assert "2" in answer and "5" in answer
    history = await agent.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)
    assert [m.role for m in history.messages][-2:] == ["user", "assistant"]
