"""A turn's streamed text in few events, and never later than it came.

The model's chunks reach the graph one by one, but when the event loop is behind (a busy
replica, a fast model) several are read in one pass. Each as its own TokenDelta costs a
protobuf event, a row of the run's event log, a gRPC message and an SSE write. So the first
chunk of a burst is emitted at once (a first token waits for nothing), and the chunks read
after it in the same pass of the event loop are joined into one event at the end of that
pass. A model streaming slower than the loop still gets one event per chunk, each at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agentmesh.agent.v1 import agent_pb2


def token_event(text: str) -> agent_pb2.ChatEvent:
    return agent_pb2.ChatEvent(token=agent_pb2.TokenDelta(text=text))


class TokenCoalescer:
    def __init__(self, emit: Callable[[agent_pb2.ChatEvent], None]) -> None:
        self._emit = emit
        self._parts: list[str] = []
        self._pass_end: asyncio.Handle | None = None

    def add(self, text: str) -> None:
        if self._pass_end is None:
            self._emit(token_event(text))
            self._pass_end = asyncio.get_running_loop().call_soon(self._end_of_pass)
        else:
            self._parts.append(text)

    def _end_of_pass(self) -> None:
        self._pass_end = None
        self._emit_gathered()

    def flush(self) -> None:
        """Emits what was gathered (the caller's last word: call it when the stream ends)."""
        if self._pass_end is not None:
            self._pass_end.cancel()
            self._pass_end = None
        self._emit_gathered()

    def _emit_gathered(self) -> None:
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._emit(token_event(text))
