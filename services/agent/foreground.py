"""Turns still working towards their model call, so background work lets them go first.

The hand-offs of finished turns (memory writes, traces) cost CPU here and in memory and
evals, and they become due exactly when a closed loop of clients sends its next messages:
delivered at once, they compete with those turns' session check, run insert, memory search
and checkpoint load, everything a first token waits for before the model is even asked.
The outbox calls `quiet()` when it wakes and waits, a bounded time, until no turn here is
in that stretch. Waiting on the model is not counted: the CPU is free then.

The bound keeps hand-offs flowing under steady load: one wait per wake-up, and a backlog
is delivered without waiting again, so hand-offs are late by milliseconds, never piled up.
"""

from __future__ import annotations

import asyncio
import contextlib


class Foreground:
    def __init__(self) -> None:
        self._waiting = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @property
    def waiting(self) -> int:
        return self._waiting

    def enter(self) -> Ticket:
        """A turn has started; it stops counting at its model call or end (`Ticket.release`)."""
        self._waiting += 1
        self._quiet.clear()
        return Ticket(self)

    def _leave(self) -> None:
        self._waiting -= 1
        if self._waiting == 0:
            self._quiet.set()

    async def quiet(self, max_wait_s: float) -> float:
        """Returns once no turn is before its model call, or after `max_wait_s`; the seconds
        it waited."""
        if self._waiting == 0 or max_wait_s <= 0:
            return 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), max_wait_s)
        return loop.time() - started


class Ticket:
    """One turn's place in the foreground; releasing it twice is harmless."""

    def __init__(self, foreground: Foreground) -> None:
        self._foreground: Foreground | None = foreground

    def release(self) -> None:
        if self._foreground is not None:
            foreground, self._foreground = self._foreground, None
            foreground._leave()
