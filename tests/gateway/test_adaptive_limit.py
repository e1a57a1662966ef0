"""The adaptive admission limit: shrinks while admitted requests are slower than their recent
best, grows back only when they are fast and the limit was what held requests back, and takes a
lasting slowdown as the new normal once the old best has aged out."""

from __future__ import annotations

import asyncio

from gateway.adaptive_limit import WINDOW_S, GradientLimit
from gateway.admission import Adaptive, AdmissionControl


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, max_limit: int = 32, baseline_s: float = 30.0) -> GradientLimit:
    return GradientLimit(max_limit, min_limit=2, tolerance=2.0, slack_s=0.1, baseline_s=baseline_s, clock=clock)


def window(limit: GradientLimit, clock: Clock, latency_s: float, *, saturated: bool = False) -> int:
    """One window (four completions at `latency_s`); the limit after it."""
    if saturated:
        limit.saturated()
    for _ in range(4):
        clock.now += WINDOW_S / 4
        limit.observe(latency_s)
    return limit.limit


def test_the_limit_shrinks_while_latency_is_inflated_and_never_below_the_floor() -> None:
    clock = Clock()
    limit = limiter(clock)
    assert window(limit, clock, 1.0) == 32  # the first window sets the baseline
    assert window(limit, clock, 1.9) == 32  # within 2 x 1.0 + 0.1 s
    shrunk = window(limit, clock, 4.2)  # twice the target: halved
    assert shrunk == 16
    for _ in range(10):
        window(limit, clock, 4.2)
    assert limit.limit == 2


def test_millisecond_noise_within_the_slack_moves_nothing() -> None:
    clock = Clock()
    limit = limiter(clock)
    window(limit, clock, 0.002)
    for _ in range(5):
        assert window(limit, clock, 0.08) == 32  # 40 x the baseline, still under 0.104 s


def test_the_limit_grows_back_only_when_it_held_requests_back() -> None:
    clock = Clock()
    limit = limiter(clock)
    window(limit, clock, 1.0)
    for _ in range(4):
        window(limit, clock, 5.0)
    low = limit.limit
    assert low < 8
    assert window(limit, clock, 1.0) == low  # fast again, but nobody waited for a slot
    grown = window(limit, clock, 1.0, saturated=True)
    assert grown > low
    for _ in range(30):
        window(limit, clock, 1.0, saturated=True)
    assert limit.limit == 32  # the configured limit is the ceiling


def test_a_lasting_slowdown_becomes_the_baseline_once_the_old_best_ages_out() -> None:
    clock = Clock()
    limit = limiter(clock, baseline_s=5.0)
    window(limit, clock, 0.5)
    window(limit, clock, 3.0)
    assert limit.limit < 32
    clock.now += 6.0  # the 0.5 s window is older than the baseline now
    window(limit, clock, 3.0)
    assert limit.baseline() == 3.0
    for _ in range(10):
        window(limit, clock, 3.0, saturated=True)
    assert limit.limit == 32


async def test_a_gate_whose_limit_dropped_admits_waiters_only_below_the_new_limit() -> None:
    adaptive = Adaptive(min_limit=1, tolerance=1.0, slack_s=0.0, baseline_s=30.0)
    admission = AdmissionControl({"chat": 4}, max_wait_ms=5000, retry_after_max_s=30, adaptive=adaptive)
    gate = admission.gate("chat")
    slots = [await admission.admit("chat") for _ in range(4)]
    waiter = asyncio.create_task(admission.admit("chat"))
    await asyncio.sleep(0)
    assert gate.waiting == 1
    # Completions far slower than the first ones bring the limit to 1 (forced through the limiter).
    assert gate._adaptive is not None
    for latency in (0.01, 0.01, 0.01, 0.01):
        gate._adaptive.observe(latency)
    gate._adaptive._window_began -= WINDOW_S
    gate._adaptive.observe(0.01)
    for _ in range(6):
        for _ in range(4):
            gate._adaptive.observe(1.0)
        gate._adaptive._window_began -= WINDOW_S
        gate._adaptive.observe(1.0)
    assert gate.limit == 1
    for slot in slots[:3]:
        slot.release()
        await asyncio.sleep(0)
        assert not waiter.done()  # still 1 or more in flight against a limit of 1
    slots[3].release()
    admitted = await asyncio.wait_for(waiter, 1)
    assert gate.in_flight == 1
    admitted.release()
