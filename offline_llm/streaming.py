"""Paced SSE delivery that notices a client hanging up.

uvicorn silently drops writes to a closed connection, so a failed `send` never tells us the client
left; instead a listener task waits for the ASGI `http.disconnect` message while the stream is being
paced, and generation stops at the next token. With no pacing at all, the whole body goes out in one
write: there is nothing to wait for, and benchmarks at zero latency should not pay per-token writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(frozen=True)
class Pacing:
    ttft_s: float = 0.0
    token_interval_s: float = 0.0
    stall_s: float = 0.0
    stall_after_tokens: int = 0

    @property
    def is_instant(self) -> bool:
        return self.ttft_s == 0 and self.token_interval_s == 0 and self.stall_s == 0


class DisconnectWatch:
    """Tracks whether the client closed the connection, from the ASGI receive channel."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.disconnected = asyncio.Event()
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.disconnected.set()

    async def left_within(self, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as the client is gone."""
        if seconds <= 0:
            return self.disconnected.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.disconnected.wait(), seconds)
        return self.disconnected.is_set()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class PacedEventStream:
    """An ASGI response streaming pre-built SSE frames: opening frames, token frames, closing frames."""

    def __init__(
        self,
        opening: list[bytes],
        tokens: list[bytes],
        closing: list[bytes],
        pacing: Pacing,
        on_complete: Callable[[], None],
        on_disconnect: Callable[[], None],
    ) -> None:
        self._opening = opening
        self._tokens = tokens
        self._closing = closing
        self._pacing = pacing
        self._on_complete = on_complete
        self._on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._pacing.is_instant:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            body = b"".join([*self._opening, *self._tokens, *self._closing])
            await send({"type": "http.response.body", "body": body, "more_body": False})
            self._on_complete()
            return
        watch = DisconnectWatch(receive)
        try:
            if await self._deliver(watch, send):
                self._on_complete()
            else:
                self._on_disconnect()
        finally:
            await watch.close()

    async def _deliver(self, watch: DisconnectWatch, send: Send) -> bool:
        pacing = self._pacing
        if pacing.stall_s and pacing.stall_after_tokens == 0 and await watch.left_within(pacing.stall_s):
            return False
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": b"".join(self._opening), "more_body": True})
        if await watch.left_within(pacing.ttft_s):
            return False
        for index, frame in enumerate(self._tokens):
            if index and await watch.left_within(pacing.token_interval_s):
                return False
            if pacing.stall_s and index == pacing.stall_after_tokens > 0 and await watch.left_within(pacing.stall_s):
                return False
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        if await watch.left_within(0):
            return False
        await send({"type": "http.response.body", "body": b"".join(self._closing), "more_body": False})
        return True
