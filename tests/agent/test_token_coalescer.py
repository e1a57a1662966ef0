"""Streamed text leaves the agent as one event per pass of its event loop: a burst of chunks
read together becomes one TokenDelta, chunks that arrive apart stay apart, and nothing waits."""

from __future__ import annotations

import asyncio

from agentmesh.agent.v1 import agent_pb2
from services.agent.token_coalescer import TokenCoalescer


def texts(events: list[agent_pb2.ChatEvent]) -> list[str]:
    return [event.token.text for event in events]


async def test_chunks_of_one_pass_become_one_event_at_its_end() -> None:
    events: list[agent_pb2.ChatEvent] = []
    tokens = TokenCoalescer(events.append)
    for chunk in ("Hel", "lo", ", "):
        tokens.add(chunk)
    assert events == []  # not yet: the rest of this pass may bring more
    await asyncio.sleep(0)
    assert texts(events) == ["Hello, "]


async def test_chunks_that_arrive_apart_stay_apart() -> None:
    events: list[agent_pb2.ChatEvent] = []
    tokens = TokenCoalescer(events.append)
    tokens.add("a")
    await asyncio.sleep(0)
    tokens.add("b")
    await asyncio.sleep(0)
    assert texts(events) == ["a", "b"]


async def test_flush_emits_at_once_and_the_scheduled_pass_adds_nothing() -> None:
    events: list[agent_pb2.ChatEvent] = []
    tokens = TokenCoalescer(events.append)
    tokens.add("last words")
    tokens.flush()
    events.append(agent_pb2.ChatEvent(completed=agent_pb2.RunCompleted()))
    await asyncio.sleep(0)
    assert [e.WhichOneof("event") for e in events] == ["token", "completed"]
    assert texts(events[:1]) == ["last words"]
    tokens.flush()  # nothing gathered: nothing emitted
    assert len(events) == 2
