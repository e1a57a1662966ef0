"""Streamed text leaves the agent in few events and never late: the first chunk of a burst
goes at once, the chunks read after it in the same pass of the event loop go together at the
end of that pass, and chunks that arrive apart each go at once."""

from __future__ import annotations

import asyncio

from agentmesh.agent.v1 import agent_pb2
from services.agent.token_coalescer import TokenCoalescer


def texts(events: list[agent_pb2.ChatEvent]) -> list[str]:
    return [event.token.text for event in events]


async def test_a_burst_is_its_first_chunk_at_once_then_the_rest_together() -> None:
    events: list[agent_pb2.ChatEvent] = []
    tokens = TokenCoalescer(events.append)
    tokens.add("Hel")
    assert texts(events) == ["Hel"]  # the first token waits for nothing
    tokens.add("lo")
    tokens.add(", ")
    assert texts(events) == ["Hel"]  # the rest of this pass may bring more
    await asyncio.sleep(0)
    assert texts(events) == ["Hel", "lo, "]


async def test_chunks_that_arrive_apart_each_go_at_once() -> None:
    events: list[agent_pb2.ChatEvent] = []
    tokens = TokenCoalescer(events.append)
    tokens.add("a")
    await asyncio.sleep(0)
    tokens.add("b")
    assert texts(events) == ["a", "b"]
    await asyncio.sleep(0)
    tokens.add("c")
    assert texts(events) == ["a", "b", "c"]


async def test_flush_emits_at_once_and_the_pass_end_adds_nothing() -> None:
    events: list[agent_pb2.ChatEvent] = []
    tokens = TokenCoalescer(events.append)
    tokens.add("first")
    tokens.add(" words")
    tokens.flush()
    events.append(agent_pb2.ChatEvent(completed=agent_pb2.RunCompleted()))
    await asyncio.sleep(0)
    assert [e.WhichOneof("event") for e in events] == ["token", "token", "completed"]
    assert texts(events[:2]) == ["first", " words"]
    tokens.flush()  # nothing gathered: nothing emitted
    assert len(events) == 3
