"""Failures around a turn: rate limits and fallback, every model down, a second turn on a
busy session, a client that cancels, memory that is down, a process that is killed."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.support.agent import (
    NewSession,
    StartAgent,
    assert_alternating,
    chat_request,
    collect,
    kinds,
    offline_stats,
    stream_request,
)
from tests.support.metrics import metric, scrape
from tests.support.users import MeshUser
from tests.support.waiting import eventually

# Model names only this module's agent uses: faults injected on them cannot be consumed by
# the memory or evals services, which share the offline LLM server.
PRIMARY, FALLBACK = "agent-test-primary", "agent-test-fallback"


@pytest.fixture(scope="module")
def isolated_agent(mesh: Mesh) -> Iterator[ChildProcess]:
    child = mesh.start_service(
        "agent",
        instance="-faults",
        LLM_MODELS=f"{PRIMARY},{FALLBACK}",
        MEMORY_ENABLED="false",
    )
    yield child
    child.stop()


@pytest.fixture
async def isolated(isolated_agent: ChildProcess) -> AsyncIterator[agent_pb2_grpc.AgentServiceStub]:
    async with grpc.aio.insecure_channel(isolated_agent.addr) as channel:
        yield agent_pb2_grpc.AgentServiceStub(channel)


async def add_fault(control: httpx.AsyncClient, **fault: object) -> None:
    response = await control.post("/_offline/faults", json=fault)
    assert response.status_code == 200, response.text


async def test_rate_limited_primary_is_retried_then_falls_back_to_the_next_model(
    isolated_agent: ChildProcess,
    isolated: agent_pb2_grpc.AgentServiceStub,
    llm_control: httpx.AsyncClient,
    user: MeshUser,
    new_session: NewSession,
) -> None:
    session_id = await new_session(user)
    before = await scrape(isolated_agent.metrics_addr)
    await add_fault(llm_control, model=PRIMARY, kind="429", count=-1, retry_after=0.05)

    response = await isolated.Chat(chat_request(session_id, "hello"), metadata=user.metadata)

    assert response.model == FALLBACK
    assert response.messages[1].content
    after = await scrape(isolated_agent.metrics_addr)
    retries = metric(after, "agent_llm_retries_total", model=PRIMARY, error="429") - metric(
        before, "agent_llm_retries_total", model=PRIMARY, error="429"
    )
    fallbacks = metric(after, "agent_llm_fallbacks_total", from_model=PRIMARY, reason="429") - metric(
        before, "agent_llm_fallbacks_total", from_model=PRIMARY, reason="429"
    )
    assert retries == 2  # three attempts (LLM_MAX_ATTEMPTS) on the primary, then the fallback
    assert fallbacks == 1
    stats = await offline_stats(llm_control)
    assert stats["requests_by_model"][PRIMARY] == 3
    assert stats["requests_by_model"][FALLBACK] == 1


async def test_every_model_failing_is_unavailable_with_a_clear_message(
    isolated: agent_pb2_grpc.AgentServiceStub, llm_control: httpx.AsyncClient, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    for model in (PRIMARY, FALLBACK):
        await add_fault(llm_control, model=model, kind="500", count=-1)

    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await isolated.Chat(chat_request(session_id, "hello"), metadata=user.metadata)
    call = isolated.StreamChat(stream_request(session_id, "hello again"), metadata=user.metadata)
    events = [event async for event in _until_error(call)]

    assert unary.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no model could answer" in (unary.value.details() or "")
    assert PRIMARY in (unary.value.details() or "") and FALLBACK in (unary.value.details() or "")
    assert kinds(events) == ["started", "error"]
    assert events[-1].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "no model could answer" in events[-1].error.message
    assert await call.code() == grpc.StatusCode.UNAVAILABLE
    history = await isolated.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)
    assert list(history.messages) == []


async def _until_error(call: grpc.aio.UnaryStreamCall):
    try:
        async for event in call:
            yield event
    except grpc.aio.AioRpcError:
        return


async def test_failing_model_is_skipped_while_its_circuit_is_open(
    start_agent: StartAgent, llm_control: httpx.AsyncClient, user: MeshUser, new_session: NewSession
) -> None:
    primary, fallback = "agent-test-circuit-primary", "agent-test-circuit-fallback"
    child = await start_agent(
        "-circuit",
        LLM_MODELS=f"{primary},{fallback}",
        LLM_MAX_ATTEMPTS="1",
        LLM_CIRCUIT_FAILURE_THRESHOLD="1",
        LLM_CIRCUIT_COOLDOWN_S="300",
        MEMORY_ENABLED="false",
    )
    await add_fault(llm_control, model=primary, kind="500", count=1)
    session_id = await new_session(user)
    async with grpc.aio.insecure_channel(child.addr) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        failed_over = await stub.Chat(chat_request(session_id, "hello"), metadata=user.metadata)
        skipped = await collect(stub.StreamChat(stream_request(session_id, "hello again"), metadata=user.metadata))

    assert failed_over.model == fallback
    assert skipped[0].started.model == fallback  # the run announces the model it will really use
    assert skipped[-1].completed.model == fallback
    stats = await offline_stats(llm_control)
    assert stats["requests_by_model"][primary] == 1  # the open circuit kept the second turn away
    samples = await scrape(child.metrics_addr)
    assert metric(samples, "agent_llm_circuit_open", model=primary) == 1
    assert metric(samples, "agent_llm_circuit_open", model=fallback) == 0
    assert metric(samples, "agent_llm_fallbacks_total", from_model=primary, reason="circuit_open") == 1


async def test_model_failing_after_its_first_tokens_is_not_retried(
    start_agent: StartAgent, llm_control: httpx.AsyncClient, user: MeshUser, new_session: NewSession
) -> None:
    primary, fallback = "agent-test-midstream-primary", "agent-test-midstream-fallback"
    child = await start_agent(
        "-midstream", LLM_MODELS=f"{primary},{fallback}", LLM_TIMEOUT_S="1", MEMORY_ENABLED="false"
    )
    await add_fault(llm_control, model=primary, kind="stall", stall_s=5, after_tokens=2, count=1)
    session_id = await new_session(user)
    async with grpc.aio.insecure_channel(child.addr) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        call = stub.StreamChat(stream_request(session_id, "hello"), metadata=user.metadata)
        events = [event async for event in _until_error(call)]
        history = await stub.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)

    assert kinds(events) == ["started", "token", "token", "error"]
    assert "stopped in the middle" in events[-1].error.message
    assert await call.code() == grpc.StatusCode.UNAVAILABLE
    stats = await offline_stats(llm_control)
    assert stats["requests_by_model"][primary] == 1
    assert fallback not in stats["requests_by_model"]  # the text already sent would have been repeated
    assert list(history.messages) == []


async def test_second_concurrent_turn_on_a_session_is_aborted(
    agent: agent_pb2_grpc.AgentServiceStub,
    isolated: agent_pb2_grpc.AgentServiceStub,
    llm_control: httpx.AsyncClient,
    user: MeshUser,
    new_session: NewSession,
) -> None:
    session_id = await new_session(user)
    await add_fault(llm_control, model=PRIMARY, kind="stall", stall_s=2, after_tokens=1, count=1)
    first = isolated.StreamChat(stream_request(session_id, "hello"), metadata=user.metadata)
    seen = []
    async for event in first:
        seen.append(event)
        if event.WhichOneof("event") == "token":
            break  # the first turn holds the session now, stalled mid-answer

    # Sent to the other replica: the lock lives in Postgres, not in one process.
    with pytest.raises(grpc.aio.AioRpcError) as second:
        await agent.Chat(chat_request(session_id, "are you there?"), metadata=user.metadata)

    assert second.value.code() == grpc.StatusCode.ABORTED
    assert "already running" in (second.value.details() or "")
    rest = [event async for event in first]
    assert kinds(rest)[-1] == "completed"
    other_session = await new_session(user)
    assert (await isolated.Chat(chat_request(other_session, "hello"), metadata=user.metadata)).messages[1].content
    after = await agent.Chat(chat_request(session_id, "are you there now?"), metadata=user.metadata)
    assert after.messages[1].content


async def test_stream_cancelled_on_disconnect_closes_the_model_call_and_keeps_what_it_said(
    isolated: agent_pb2_grpc.AgentServiceStub, llm_control: httpx.AsyncClient, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    first = await isolated.Chat(chat_request(session_id, "My name is Ada"), metadata=user.metadata)
    await add_fault(llm_control, model=PRIMARY, kind="stall", stall_s=30, after_tokens=2, count=1)
    request = stream_request(session_id, "tell me a long story")
    request.on_disconnect = agent_pb2.ON_DISCONNECT_CANCEL
    call = isolated.StreamChat(request, metadata=user.metadata)
    tokens = []
    async for event in call:
        if event.WhichOneof("event") == "token":
            tokens.append(event.token.text)
        if len(tokens) == 2:
            break

    call.cancel()

    async def disconnected() -> dict:
        stats = await offline_stats(llm_control)
        assert stats["client_disconnects"] >= 1
        return stats

    stats = await eventually(disconnected, timeout_s=5)
    assert stats["requests_by_model"][PRIMARY] == 2  # the first turn and the cancelled one, not retried
    following = await _chat_when_free(isolated, user, session_id, "what is my name?")
    assert "Ada" in following.messages[1].content
    history = await isolated.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)
    assert_alternating(list(history.messages))
    # The stopped turn is kept: the user's message and what the answer had reached, marked interrupted.
    assert [(m.content, m.interrupted) for m in history.messages] == [
        ("My name is Ada", False),
        (first.messages[1].content, False),
        ("tell me a long story", False),
        ("".join(tokens), True),
        ("what is my name?", False),
        (following.messages[1].content, False),
    ]


async def _chat_when_free(
    agent: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, content: str
) -> agent_pb2.ChatResponse:
    """The cancelled turn releases the session within moments; a turn sent meanwhile is ABORTED."""

    async def chat() -> agent_pb2.ChatResponse:
        try:
            return await agent.Chat(chat_request(session_id, content), metadata=user.metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ABORTED:
                raise
            raise AssertionError("the session stayed busy after the cancelled turn") from exc

    return await eventually(chat, timeout_s=2.5)


async def test_turn_succeeds_without_memory_when_the_memory_service_is_down(
    start_agent: StartAgent, user: MeshUser, new_session: NewSession
) -> None:
    child = await start_agent("-no-memory", MEMORY_ADDR="127.0.0.1:1", EVALS_ADDR="127.0.0.1:1")
    session_id = await new_session(user)
    async with grpc.aio.insecure_channel(child.addr) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        events = await collect(stub.StreamChat(stream_request(session_id, "hello"), metadata=user.metadata))

    assert kinds(events)[0] == "started" and kinds(events)[-1] == "completed"
    assert "memory" not in kinds(events)
    samples = await scrape(child.metrics_addr)
    assert metric(samples, "agent_memory_lookups_total", result="error") >= 1
    assert metric(samples, "agent_runs_total", outcome="completed") == 1


async def test_history_survives_the_agent_being_killed(
    start_agent: StartAgent, user: MeshUser, new_session: NewSession
) -> None:
    # Memory off: what the agent knows afterwards can only come from its checkpoints.
    settings = {"MEMORY_ENABLED": "false"}
    session_id = await new_session(user)
    child = await start_agent("-restart", **settings)
    async with grpc.aio.insecure_channel(child.addr) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        first = await stub.Chat(chat_request(session_id, "My name is Ada Lovelace"), metadata=user.metadata)

    child.signal(signal.SIGKILL)
    await asyncio.to_thread(child.process.wait, 10)  # type: ignore[union-attr]
    restarted = await start_agent("-restart", **settings)

    async with grpc.aio.insecure_channel(restarted.addr) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        second = await stub.Chat(chat_request(session_id, "what is my name?"), metadata=user.metadata)
        history = await stub.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)
    assert "Ada Lovelace" in second.messages[1].content
    assert [m.content for m in history.messages] == [
        "My name is Ada Lovelace",
        first.messages[1].content,
        "what is my name?",
        second.messages[1].content,
    ]
