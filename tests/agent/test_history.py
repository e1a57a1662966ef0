"""Conversations that stay bounded and readable: checkpoints pruned so storage grows
linearly, history paged newest first with each turn's details, and compaction that keeps
what the user said at the start available to the model hundreds of turns later."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.support.agent import NewSession, chat_request, collect, stream_request
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser

QUIET = {"MEMORY_ENABLED": "false", "EVALS_ENABLED": "false"}
# Words with no fact in them (nothing for memory or a summary to keep), drawn at random so
# the text does not compress away: storage is measured as Postgres stores it (TOASTed).
WORDS = [
    *("river", "stone", "cloud", "lantern", "orchard", "pebble", "meadow"),
    *("harbor", "violet", "copper", "thistle", "ember", "glacier"),
]


def long_message(index: int, size: int = 2000) -> str:
    draw = random.Random(index)
    text = f"Message number {index}."
    while len(text) < size:
        text += " " + draw.choice(WORDS)
    return text[:size]


@pytest.fixture(scope="module")
def compacting_agent(mesh: Mesh) -> Iterator[ChildProcess]:
    child = mesh.start_service("agent", instance="-history", **QUIET)
    yield child
    child.stop()


@pytest.fixture
async def stub(compacting_agent: ChildProcess) -> AsyncIterator[agent_pb2_grpc.AgentServiceStub]:
    async with grpc.aio.insecure_channel(compacting_agent.addr) as channel:
        yield agent_pb2_grpc.AgentServiceStub(channel)


async def all_pages(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, page_size: int
) -> list[list[agent_pb2.Message]]:
    pages, token = [], ""
    while True:
        request = agent_pb2.GetHistoryRequest(session_id=session_id, page_size=page_size, page_token=token)
        response = await stub.GetHistory(request, metadata=user.metadata, timeout=30)
        pages.append(list(response.messages))
        token = response.next_page_token
        if not token:
            return pages


async def stored_bytes(mesh: Mesh, session_id: str) -> int:
    import psycopg

    query = (
        "SELECT coalesce((SELECT sum(pg_column_size(c.*)) FROM agent.checkpoints c WHERE thread_id = %(t)s), 0)"
        " + coalesce((SELECT sum(pg_column_size(b.*)) FROM agent.checkpoint_blobs b WHERE thread_id = %(t)s), 0)"
        " + coalesce((SELECT sum(pg_column_size(w.*)) FROM agent.checkpoint_writes w WHERE thread_id = %(t)s), 0)"
    )
    async with await psycopg.AsyncConnection.connect(mesh.env["DATABASE_URL"]) as conn:
        row = await (await conn.execute(query, {"t": session_id})).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow  # about two minutes of turns: `make test-slow`
@pytest.mark.timeout(480)
async def test_three_hundred_long_turns_stay_linear_paged_and_remembered(
    stub: agent_pb2_grpc.AgentServiceStub, mesh: Mesh, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    first = "My name is Ada Lovelace. " + long_message(0)[25:]
    sizes: dict[int, tuple[int, int]] = {}
    raw = 0
    latencies: dict[int, float] = {}
    for index in range(300):
        content = first if index == 0 else long_message(index)
        started = time.perf_counter()
        turn = await stub.Chat(chat_request(session_id, content), metadata=user.metadata, timeout=60)
        latencies[index + 1] = time.perf_counter() - started
        raw += len(content.encode()) + len(turn.messages[1].content.encode())
        if index + 1 in (100, 300):
            sizes[index + 1] = (await stored_bytes(mesh, session_id), raw)

    asked = await stub.Chat(chat_request(session_id, "what is my name?"), metadata=user.metadata, timeout=60)
    size = await stored_bytes(mesh, session_id)
    pages = await all_pages(stub, user, session_id, page_size=200)

    print(
        f"\ncheckpoint storage after 100 turns {sizes[100][0]} B for {sizes[100][1]} B of text,"
        f" after 300 turns {size} B for {raw} B ({size / raw:.2f}x);"
        f" turn latency at turn 10 {latencies[10] * 1000:.0f} ms, at turn 300 {latencies[300] * 1000:.0f} ms"
    )
    assert "Ada Lovelace" in asked.messages[1].content
    assert size <= 3 * raw, f"{size} bytes of checkpoints for {raw} bytes of text"
    messages = [message for page in reversed(pages) for message in page]
    assert len(messages) == 602 and len(pages) == 4
    assert [len(page) for page in pages] == [200, 200, 200, 2]
    assert messages[0].content == first and messages[-2].content == "what is my name?"
    assert len({m.message_id for m in messages}) == 602
    assert all(a.create_time.ToDatetime() <= b.create_time.ToDatetime() for a, b in itertools.pairwise(messages))


async def test_trimming_forgets_what_summarizing_keeps(start_agent, user: MeshUser, new_session: NewSession) -> None:
    trimming = await start_agent("-history-trim", **QUIET, CONTEXT_STRATEGY="trim", MAX_CONTEXT_TOKENS="1500")
    summarizing = await start_agent("-history-sum", **QUIET, MAX_CONTEXT_TOKENS="1500")
    answers = {}
    for name, child in (("trim", trimming), ("summarize", summarizing)):
        session_id = await new_session(user)
        async with grpc.aio.insecure_channel(child.addr) as channel:
            agent = agent_pb2_grpc.AgentServiceStub(channel)
            await agent.Chat(chat_request(session_id, "My name is Ada Lovelace."), metadata=user.metadata)
            for index in range(12):
                await agent.Chat(chat_request(session_id, long_message(index, 1000)), metadata=user.metadata)
            asked = await agent.Chat(chat_request(session_id, "what is my name?"), metadata=user.metadata)
        answers[name] = asked.messages[1].content
    assert "Ada Lovelace" in answers["summarize"]
    assert "Ada Lovelace" not in answers["trim"]


async def test_history_shows_each_turns_tool_calls_and_metadata(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    events = await collect(stub.StreamChat(stream_request(session_id, "what is 6*7"), metadata=user.metadata))
    completed = events[-1].completed

    [question, answer] = (
        await stub.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id), metadata=user.metadata)
    ).messages

    assert question.role == "user" and question.run_id == events[0].run_id and question.message_id
    assert answer.run_id == events[0].run_id and answer.content == completed.message.content
    assert [(u.call.name, u.result) for u in answer.tool_uses] == [("calculator", "42")]
    assert answer.model == completed.model
    assert answer.usage.prompt_tokens == completed.usage.prompt_tokens > 0
    assert answer.latency_ms > 0 and answer.create_time.seconds > 0


async def test_history_page_tokens_are_checked(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    for index in range(3):
        await stub.Chat(chat_request(session_id, f"hello {index}"), metadata=user.metadata)
    pages = await all_pages(stub, user, session_id, page_size=4)
    assert [len(p) for p in pages] == [4, 2]

    too_big = await rpc_failure(
        stub.GetHistory(agent_pb2.GetHistoryRequest(session_id=session_id, page_size=201), metadata=user.metadata)
    )
    forged = await rpc_failure(
        stub.GetHistory(
            agent_pb2.GetHistoryRequest(session_id=session_id, page_token="WyI5OSIsICJ4Il0"), metadata=user.metadata
        )
    )
    assert (too_big.code, too_big.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_SIZE_INVALID")
    assert (forged.code, forged.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")
