"""Nothing a user said is lost because memory or evals was down: the agent's hand-offs
wait in its outbox and arrive once the receiver is back, exactly once."""

from __future__ import annotations

import asyncio
import signal
import uuid

import grpc
import psycopg

from agentmesh.agent.v1 import agent_pb2_grpc
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from meshctl.mesh import Mesh, free_port
from tests.support.agent import NewSession, StartAgent, chat_request
from tests.support.metrics import metric, scrape
from tests.support.users import MeshUser
from tests.support.waiting import eventually

FAST_RETRIES = {"HANDOFF_MAX_BACKOFF_S": "0.5", "HANDOFF_TIMEOUT_S": "3"}


async def memories_about(mesh: Mesh, user: MeshUser, word: str) -> list[str]:
    async with grpc.aio.insecure_channel(mesh.addr("memory")) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        listed = await stub.ListMemories(memory_pb2.ListMemoriesRequest(page_size=100), metadata=user.metadata)
    return [m.text for m in listed.memories if word in m.text.lower()]


async def test_memory_down_during_a_turn_gets_the_fact_once_it_is_back(
    mesh: Mesh, start_agent: StartAgent, user: MeshUser, new_session: NewSession
) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    ports = {"GRPC_PORT": str(grpc_port), "METRICS_PORT": str(metrics_port)}
    memory = await asyncio.to_thread(mesh.start_service, "memory", instance="-outbox", **ports)
    agent = await start_agent("-outbox", MEMORY_ADDR=f"127.0.0.1:{grpc_port}", EVALS_ENABLED="false", **FAST_RETRIES)
    session_id = await new_session(user)
    memory.signal(signal.SIGSTOP)  # frozen: accepts connections, answers nothing
    try:
        async with grpc.aio.insecure_channel(agent.addr) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            turn = await stub.Chat(chat_request(session_id, "I live in Rome"), metadata=user.metadata, timeout=60)
        assert turn.messages[1].content  # the turn itself succeeds without memory

        async def waiting() -> None:
            samples = await scrape(agent.metrics_addr)
            assert metric(samples, "agent_outbox_deliveries_total", kind="memory.add", result="retry") >= 1

        await eventually(waiting, timeout_s=30, interval_s=0.25)
        assert await memories_about(mesh, user, "rome") == []
    finally:
        memory.signal(signal.SIGCONT)

    async def arrived() -> list[str]:
        facts = await memories_about(mesh, user, "rome")
        assert facts
        return facts

    assert len(await eventually(arrived, timeout_s=60, interval_s=0.5)) == 1
    await asyncio.to_thread(memory.stop)


async def test_evals_down_gets_the_trace_later_exactly_once(
    mesh: Mesh, start_agent: StartAgent, user: MeshUser, new_session: NewSession
) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    ports = {"GRPC_PORT": str(grpc_port), "METRICS_PORT": str(metrics_port)}
    agent = await start_agent(
        "-outbox-evals", EVALS_ADDR=f"127.0.0.1:{grpc_port}", MEMORY_ENABLED="false", **FAST_RETRIES
    )
    session_id = await new_session(user)
    async with grpc.aio.insecure_channel(agent.addr) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        turn = await stub.Chat(chat_request(session_id, "hello"), metadata=user.metadata, timeout=60)

    async def retried() -> None:
        samples = await scrape(agent.metrics_addr)
        assert metric(samples, "agent_outbox_deliveries_total", kind="evals.trace", result="retry") >= 1

    await eventually(retried, timeout_s=30, interval_s=0.25)
    assert await trace_rows(mesh, turn.run_id) == 0

    evals = await asyncio.to_thread(mesh.start_service, "evals", instance="-outbox", **ports)
    try:

        async def recorded() -> None:
            assert await trace_rows(mesh, turn.run_id) == 1

        await eventually(recorded, timeout_s=60, interval_s=0.5)
        await asyncio.sleep(1.5)  # several delivery rounds later, still one row
        assert await trace_rows(mesh, turn.run_id) == 1
        # Delivered, so no longer waiting (the outbox is shared by every agent of the mesh:
        # look at this user's items, not at the whole table's depth).
        assert await pending_hand_offs(mesh, user.user_id, "evals.trace") == 0
    finally:
        await asyncio.to_thread(evals.stop)


async def pending_hand_offs(mesh: Mesh, user_id: str, kind: str) -> int:
    async with await psycopg.AsyncConnection.connect(mesh.env["DATABASE_URL"]) as conn:
        query = "SELECT count(*) FROM agent.outbox WHERE user_id = %s AND kind = %s AND dead_at IS NULL"
        row = await (await conn.execute(query, (user_id, kind))).fetchone()
    return int(row[0]) if row else 0


async def trace_rows(mesh: Mesh, trace_id: str) -> int:
    async with await psycopg.AsyncConnection.connect(mesh.env["DATABASE_URL"]) as conn:
        cursor = await conn.execute("SELECT count(*) FROM evals.traces WHERE trace_id = %s", (trace_id,))
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def test_the_same_memory_write_delivered_twice_changes_nothing(mesh: Mesh, user: MeshUser) -> None:
    key = str(uuid.uuid4())
    request = memory_pb2.AddMemoriesRequest(facts=[f"Has a cat named Tom {key[:8]}"], idempotency_key=key)
    async with grpc.aio.insecure_channel(mesh.addr("memory")) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        first = await stub.AddMemories(request, metadata=user.metadata)
        second = await stub.AddMemories(request, metadata=user.metadata)
    assert [e.event for e in first.events] == [memory_pb2.MemoryEvent.ADD]
    assert list(second.events) == []
    assert len(await memories_about(mesh, user, key[:8])) == 1
