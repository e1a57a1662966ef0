"""A turn's events and results: streaming tokens, tool calls, the unary form, history."""

from __future__ import annotations

import json

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from tests.support.agent import NewSession, assert_alternating, chat_request, collect, kinds, stream_request
from tests.support.users import MeshUser


async def test_stream_sends_tokens_whose_concatenation_is_the_final_message(
    agent: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)

    events = await collect(agent.StreamChat(stream_request(session_id, "hello there"), metadata=user.metadata))

    order = kinds(events)
    assert order[0] == "started" and order[-1] == "completed"
    tokens = [e.token.text for e in events if e.WhichOneof("event") == "token"]
    assert len(tokens) >= 3
    assert order.index("completed") > max(i for i, kind in enumerate(order) if kind == "token")
    completed = events[-1].completed
    assert "".join(tokens) == completed.message.content
    assert completed.message.role == "assistant"
    assert completed.model == events[0].started.model == "offline-small"
    assert completed.usage.prompt_tokens > 0 and completed.usage.completion_tokens > 0
    assert completed.usage.total_tokens == completed.usage.prompt_tokens + completed.usage.completion_tokens
    assert completed.latency_ms >= 0
    assert events[0].started.run_id


async def test_calculator_question_streams_tool_call_then_result_then_answer(
    agent: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)

    events = await collect(agent.StreamChat(stream_request(session_id, "what is 12*(3+4)?"), metadata=user.metadata))

    order = kinds(events)
    call_at, result_at = order.index("tool_call"), order.index("tool_result")
    assert call_at < result_at < order.index("token") < order.index("completed")
    call, result = events[call_at].tool_call, events[result_at].tool_result
    assert call.name == "calculator" and json.loads(call.arguments_json) == {"expression": "12*(3+4)"}
    assert result.id == call.id and result.name == "calculator" and result.content == "84"
    assert "84" in events[-1].completed.message.content


async def test_tool_error_becomes_the_tools_answer_not_a_failed_turn(
    agent: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)

    response = await agent.Chat(chat_request(session_id, "calculate 1/0"), metadata=user.metadata)

    assert [call.name for call in response.tool_calls] == ["calculator"]
    assert "division by zero" in response.messages[1].content


async def test_chat_returns_the_turn_and_history_keeps_it(
    agent: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)

    first = await agent.Chat(chat_request(session_id, "My name is Ada"), metadata=user.metadata)
    second = await agent.Chat(chat_request(session_id, "what is my name?"), metadata=user.metadata)

    assert [m.role for m in first.messages] == ["user", "assistant"]
    assert first.messages[0].content == "My name is Ada"
    assert first.model == "offline-small" and first.run_id and first.run_id != second.run_id
    assert first.usage.total_tokens > 0
    assert "Ada" in second.messages[1].content
    history = await agent.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)
    assert [m.content for m in history.messages] == [
        "My name is Ada",
        first.messages[1].content,
        "what is my name?",
        second.messages[1].content,
    ]
    assert_alternating(list(history.messages))


async def test_history_leaves_out_tool_messages(
    agent: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    response = await agent.Chat(chat_request(session_id, "what is 2^10?"), metadata=user.metadata)

    history = await agent.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)

    assert [m.content for m in history.messages] == ["what is 2^10?", response.messages[1].content]
    assert "1024" in response.messages[1].content


async def test_clear_history_empties_the_conversation_and_the_next_turn_starts_fresh(
    agent: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    await agent.Chat(chat_request(session_id, "My name is Grace"), metadata=user.metadata)

    await agent.ClearHistory(agent_pb2.ClearHistoryRequest(session_id=session_id), metadata=user.metadata)

    history = await agent.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)
    assert list(history.messages) == []
    response = await agent.Chat(chat_request(session_id, "hello"), metadata=user.metadata)
    history = await agent.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)
    assert [m.content for m in history.messages] == ["hello", response.messages[1].content]


async def test_the_next_turn_may_start_as_soon_as_completed_arrives(
    agent: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    """`completed` is sent after the session's run lock is released: a client that answers
    it at once (as the chat page does) never finds its own session busy."""
    session_id = await new_session(user)
    for round_number in range(5):
        async for event in agent.StreamChat(
            stream_request(session_id, f"message {round_number}"), metadata=user.metadata
        ):
            if event.WhichOneof("event") == "completed":
                reply = await agent.Chat(chat_request(session_id, f"follow-up {round_number}"), metadata=user.metadata)
                assert reply.messages[1].content
    history = await agent.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)
    assert len(history.messages) == 20
    assert_alternating(list(history.messages))
