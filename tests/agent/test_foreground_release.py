"""Every way a turn can go gives back its place among the turns before their model call:
one that was not given back would make every later hand-off wait its full HANDOFF_YIELD_S.
The outbox checks on every idle poll too, so a leaked place shows as idle polls that wait."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from tests.support.agent import NewSession, StartAgent, chat_request, stream_request
from tests.support.metrics import metric, scrape
from tests.support.runs import create_run
from tests.support.users import MeshUser
from tests.support.waiting import eventually

YIELD = "agent_outbox_yield_seconds"


async def test_no_turn_keeps_background_work_waiting(
    start_agent: StartAgent, user: MeshUser, new_session: NewSession
) -> None:
    child = await start_agent("-foreground", HANDOFF_YIELD_S="0.2")
    session_id = await new_session(user)
    async with grpc.aio.insecure_channel(child.addr) as channel:
        agent = agent_pb2_grpc.AgentServiceStub(channel)
        # Answered; streamed with another queued behind it; refused (not the caller's session).
        await agent.Chat(chat_request(session_id, "I live in Rome"), metadata=user.metadata, timeout=60)
        streamed = agent.StreamChat(stream_request(session_id, "and my cat is Miso"), metadata=user.metadata)
        assert (await streamed.read()).WhichOneof("event") == "started"  # running: the next one queues
        enqueue = agent_pb2.MULTITASK_STRATEGY_ENQUEUE
        queued = await create_run(agent, user, session_id, "what is my cat called?", enqueue)
        while await streamed.read() is not grpc.aio.EOF:  # read() and `async for` do not mix
            pass
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent.Chat(chat_request(str(uuid.uuid4()), "hello"), metadata=user.metadata, timeout=30)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND

        async def ended() -> None:
            run = await agent.GetRun(
                agent_pb2.GetRunRequest(session_id=session_id, run_id=queued.run_id), metadata=user.metadata
            )
            assert run.run.status == agent_pb2.RUN_STATUS_SUCCEEDED

        await eventually(ended, timeout_s=30, interval_s=0.2)

    before = await scrape(child.metrics_addr)
    await asyncio.sleep(2.5)  # two idle polls of the outbox at least
    after = await scrape(child.metrics_addr)

    assert metric(after, f"{YIELD}_count") >= metric(before, f"{YIELD}_count") + 2
    assert metric(after, f"{YIELD}_sum") == metric(before, f"{YIELD}_sum")
