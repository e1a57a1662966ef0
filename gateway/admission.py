"""Admission control: a bounded number of requests in flight per route class, a bounded wait.

A request of class C takes one of C's slots before the gateway calls its upstream. When none is
free it waits in line at most `ADMISSION_MAX_WAIT_MS`; when none frees up in that time it is
refused at once (503, `Retry-After`) instead of queueing for tens of seconds behind work the
upstreams cannot finish soon. Accepted requests then see the upstreams' real service time, not
the length of a queue, and the refused ones learn when to come back. A class's limit is not
fixed: it drops while its admitted requests get slower than their recent best (CPU taken by a
burst of other work), and grows back when they are not (gateway/adaptive_limit.py).

The limiter is in memory and per replica on purpose: it protects this replica's share of its
upstreams (a bcrypt-bound auth service, an LLM-bound agent), which the replica alone can see and
which must be decided in microseconds on every request. The per-user rate limits, which must
count across replicas, stay in shared storage (gateway/ratelimit.py, Redis in production).

A server stream holds its slot for the whole stream, not just until its first event: the cost
of an agent turn is the turn, so releasing at the first token would let an unbounded number of
turns run at once. The chat_stream limit therefore bounds the concurrent chat streams of a
replica, and the read class (which includes resuming a run's stream) gets a high limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.adaptive_limit import GradientLimit

DEFAULT_CLASS = "default"
# Before a class has served anything, its service time is guessed: short enough that the first
# refusals ask for a retry in about a second, the smallest Retry-After there is.
INITIAL_SERVICE_S = 0.1
# How fast the service-time average follows new requests (the weight of the newest one).
SERVICE_EWMA_WEIGHT = 0.2


class Overloaded(Exception):
    """No slot of the class freed up within the wait; the caller should retry after `retry_after_s`."""

    def __init__(self, route_class: str, retry_after_s: int, limit: int) -> None:
        super().__init__(f"{route_class}: all {limit} slots busy")
        self.route_class = route_class
        self.retry_after_s = retry_after_s
        self.limit = limit


@dataclass(frozen=True)
class Adaptive:
    """How far a class's limit may move with its latency (gateway/adaptive_limit.py)."""

    min_limit: int
    tolerance: float
    slack_s: float
    baseline_s: float


class ClassGate:
    """The slots of one route class: a count in flight and a FIFO of waiters.

    A released slot is handed to the oldest waiter in the same step (nothing can run between
    the release and the hand-over), so a request arriving just then cannot overtake one that
    has been waiting. With
    `adaptive`, the limit is the configured one lowered while latency is inflated.
    """

    def __init__(self, name: str, limit: int, retry_after_max_s: int, adaptive: Adaptive | None = None) -> None:
        self.name = name
        self.max_limit = limit
        self._adaptive = (
            GradientLimit(
                limit,
                min_limit=adaptive.min_limit,
                tolerance=adaptive.tolerance,
                slack_s=adaptive.slack_s,
                baseline_s=adaptive.baseline_s,
            )
            if adaptive is not None and limit > 0
            else None
        )
        self.retry_after_max_s = retry_after_max_s
        self.in_flight = 0
        self.service_s = INITIAL_SERVICE_S
        self._measured = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        # When the last refused request was told to come back (monotonic): the next refusal
        # is given the turn after it, so the refused return spread out at the rate the class
        # serves, not all at once to be refused again.
        self._next_return = 0.0

    @property
    def limit(self) -> int:
        """Slots now (0: unlimited): the configured limit, or less while latency is inflated."""
        return self._adaptive.limit if self._adaptive is not None else self.max_limit

    @property
    def waiting(self) -> int:
        # A waiter leaves the line as soon as it is served or gives up, so the length is the count.
        return len(self._waiters)

    async def acquire(self, max_wait_s: float) -> bool:
        """True with a slot taken; False when none freed up within `max_wait_s`."""
        if self.max_limit <= 0 or (self.in_flight < self.limit and not self.waiting):
            self.in_flight += 1
            return True
        if self._adaptive is not None:
            self._adaptive.saturated()
        if max_wait_s <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max_wait_s):
                await waiter
            return True
        except TimeoutError:
            # The slot may have been handed over just as the time ran out: it is ours then.
            return waiter.done() and not waiter.cancelled()
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(None)  # handed a slot this (cancelled) request will never use
            raise
        finally:
            # release() may already have taken it off the line.
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def release(self, held_s: float | None) -> None:
        if held_s is not None:
            self._observe(held_s)
        self.in_flight = max(0, self.in_flight - 1)
        # Below the limit now (it may have just dropped, or grown): the oldest waiters go first.
        while self._waiters and (self.max_limit <= 0 or self.in_flight < self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.in_flight += 1

    def shed(self) -> Overloaded:
        """Record a refusal and say when to come back: the next free turn."""
        now = time.monotonic()
        # Never scheduled past the longest Retry-After: beyond it every refusal would hear the
        # cap anyway, and a schedule run far ahead would keep saying so after the load is gone.
        self._next_return = min(self._next_turn(now), now + self.retry_after_max_s)
        return Overloaded(self.name, self._whole_seconds(self._next_return - now), self.limit)

    def retry_after_s(self) -> int:
        """Whole seconds until a request arriving now would likely get a slot."""
        now = time.monotonic()
        return self._whole_seconds(self._next_turn(now) - now)

    def _next_turn(self, now: float) -> float:
        """One turn (the service time over the slots) after everything waiting and every
        earlier refusal still due back."""
        turn = self.service_s / max(1, self.limit)
        return max(self._next_return, now + self.waiting * turn) + turn

    def _whole_seconds(self, seconds: float) -> int:
        return int(min(self.retry_after_max_s, max(1, math.ceil(seconds))))

    def _observe(self, held_s: float) -> None:
        if self._adaptive is not None:
            self._adaptive.observe(held_s)
        if not self._measured:
            self.service_s, self._measured = held_s, True
        else:
            self.service_s += SERVICE_EWMA_WEIGHT * (held_s - self.service_s)


class Slot:
    """One admitted request's slot; released exactly once, however often release() is called."""

    def __init__(self, gate: ClassGate) -> None:
        self._gate = gate
        self._started = time.monotonic()
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._gate.release(time.monotonic() - self._started)


class AdmissionControl:
    """The gates of every route class, with the limits of the settings (0: unlimited)."""

    def __init__(
        self,
        limits: Mapping[str, int],
        *,
        max_wait_ms: int,
        retry_after_max_s: int,
        adaptive: Adaptive | None = None,
        on_shed: Callable[[str], None] | None = None,
    ) -> None:
        self._limits = dict(limits)
        self._adaptive = adaptive
        self._max_wait_s = max_wait_ms / 1000
        self._retry_after_max_s = retry_after_max_s
        self._on_shed = on_shed
        self.gates: dict[str, ClassGate] = {name: self._new_gate(name) for name in self._limits}

    def _new_gate(self, name: str) -> ClassGate:
        # A class the contracts declare but the settings do not name gets the default's limit.
        limit = self._limits.get(name, self._limits.get(DEFAULT_CLASS, 0))
        return ClassGate(name, limit, self._retry_after_max_s, self._adaptive)

    def gate(self, route_class: str) -> ClassGate:
        gate = self.gates.get(route_class)
        if gate is None:
            gate = self.gates[route_class] = self._new_gate(route_class)
        return gate

    async def admit(self, route_class: str) -> Slot:
        """A slot of the class, or Overloaded once the wait is over."""
        gate = self.gate(route_class)
        if await gate.acquire(self._max_wait_s):
            return Slot(gate)
        if self._on_shed is not None:
            self._on_shed(route_class)
        raise gate.shed()


class ReleasedWhenSent:
    """An ASGI response (a relayed stream) that gives its slot back once sent, or abandoned."""

    def __init__(self, response: ASGIApp, slot: Slot) -> None:
        self.response = response
        self.slot = slot
        self.status_code: int = getattr(response, "status_code", 200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            self.slot.release()
