"""Durable runs in the benchmark: how long a client that reconnects waits for its first
replayed event, the run's events replayed from another connection exactly once."""

from __future__ import annotations

import time
from typing import Any

import grpc

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from bench.clients import PROMPTS, create_session, register_user
from bench.stats import summary_ms

DROP_AFTER_EVENTS = 3


async def reconnect_latency(
    channels: dict[str, grpc.aio.Channel], *, agent_addr: str, reconnects: int
) -> dict[str, Any]:
    """Per reconnect: a streamed turn dropped after its third event, then StreamRun with
    after_seq on a new channel; timed from the StreamRun call to its first event."""
    user = await register_user(channels["auth"], "bench-resume")
    waits: list[float] = []
    missing = 0
    for index in range(reconnects):
        session_id = await create_session(channels["sessions"], user)
        stub = agent_pb2_grpc.AgentServiceStub(channels["agent"])
        request = agent_pb2.StreamChatRequest(
            session_id=session_id, message=agent_pb2.Message(role="user", content=PROMPTS[index % len(PROMPTS)])
        )
        call = stub.StreamChat(request, metadata=user.metadata, timeout=60)
        seen: list[agent_pb2.ChatEvent] = []
        async for event in call:
            seen.append(event)
            if len(seen) == DROP_AFTER_EVENTS:
                break
        call.cancel()
        async with grpc.aio.insecure_channel(agent_addr) as fresh:
            resume = agent_pb2_grpc.AgentServiceStub(fresh).StreamRun(
                agent_pb2.StreamRunRequest(session_id=session_id, run_id=seen[0].run_id, after_seq=seen[-1].seq),
                metadata=user.metadata,
                timeout=60,
            )
            started = time.perf_counter()
            first = await resume.read()
            waits.append(time.perf_counter() - started)
            rest = []
            event = first
            while event is not grpc.aio.EOF:
                rest.append(event)
                event = await resume.read()
        if [e.seq for e in rest] != list(range(DROP_AFTER_EVENTS + 1, DROP_AFTER_EVENTS + 1 + len(rest))):
            missing += 1
    return {"reconnects": reconnects, "first_replayed_event_ms": summary_ms(waits), "out_of_order": missing}
