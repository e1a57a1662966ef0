"""A turn's streamed text as few events as there are bursts, never later than it came.

The model's chunks reach the graph one by one, but when the event loop is behind (a busy
replica, a fast model) several are read in one pass. Each one as its own TokenDelta costs a
protobuf event, a row of the run's event log, a gRPC message and an SSE write, per chunk. The
coalescer gathers what arrives within one pass of the event loop and emits it as one event at
the end of that pass: nothing waits for text that has not arrived, so the first token is not
delayed, and a model streaming slower than the loop still gets one event per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agentmesh.agent.v1 import agent_pb2


class TokenCoalescer:
    def __init__(self, emit: Callable[[agent_pb2.ChatEvent], None]) -> None:
        self._emit = emit
        self._parts: list[str] = []
        self._scheduled: asyncio.Handle | None = None

    def add(self, text: str) -> None:
        self._parts.append(text)
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Emits what was gathered (the caller's last word: call it when the stream ends)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._emit(agent_pb2.ChatEvent(token=agent_pb2.TokenDelta(text=text)))
