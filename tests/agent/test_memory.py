"""Long-term memory across sessions, through the real memory service."""

from __future__ import annotations

from agentmesh.agent.v1 import agent_pb2_grpc
from tests.support.agent import NewSession, collect, kinds, stream_request
from tests.support.users import MeshUser
from tests.support.waiting import eventually


async def test_fact_from_one_session_is_used_in_a_new_session(
    agent: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    first_session = await new_session(user)
    told = await collect(agent.StreamChat(stream_request(first_session, "I love hiking"), metadata=user.metadata))
    assert kinds(told)[-1] == "completed"

    # The memory is written in the background after the turn; give it a few seconds.
    async def recalled() -> list:
        session_id = await new_session(user)
        # MEMORY_MIN_SCORE keeps unrelated facts out of the prompt; the offline embedder is
        # lexical, so the question shares a word with the fact ("like" would score 0.0).
        events = await collect(agent.StreamChat(stream_request(session_id, "what do I love?"), metadata=user.metadata))
        assert "memory" in kinds(events), "no memory event in a new session"
        return events

    events = await eventually(recalled, timeout_s=30, interval_s=0.25)

    memory = [e.memory for e in events if e.WhichOneof("event") == "memory"]
    assert memory, "no memory event in a new session"
    assert any("hiking" in fact.lower() for fact in memory[0].facts)
    assert kinds(events).index("memory") < kinds(events).index("token")
    assert "hiking" in events[-1].completed.message.content.lower()
