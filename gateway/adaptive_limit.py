"""A route class's concurrency limit, moved by the latency its admitted requests see.

A fixed limit is right for one machine and one load mix only. On two cores, 32 chats in flight
are fine while nothing else runs and several seconds each once a burst of logins takes the CPU:
the upstreams are the same, their share of the machine is not. So the limit follows the
gradient algorithm of Netflix's concurrency-limits (and Envoy's adaptive concurrency filter):
every window of completed requests is compared with the best latency the class showed lately,
and the limit shrinks in proportion when the window is slower than `tolerance` times that plus
`slack_s`, and grows by about its square root when the window was both fast enough and short
of slots. The slack keeps millisecond classes from reacting to millisecond noise: a read that
went from 2 to 8 ms is not an overload, one that went from 20 ms to 2 s is.

The configured limit (ADMISSION_LIMIT_<CLASS>) is the ceiling and the starting point; the floor
is `min_limit`. The baseline is the lowest window average of the last `baseline_s`, so a class
whose work got slower for good (a slower model) takes that as its new normal within that time,
and the limit does not stay pinned to the floor.

No library: the Python packages that do this are single-author 0.1 releases; the algorithm is
this module.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

# A window closes after this long, once it holds at least MIN_SAMPLES completions.
WINDOW_S = 0.5
MIN_SAMPLES = 4
# A window at most halves the limit: one bad window is not a collapse.
MIN_GRADIENT = 0.5


class GradientLimit:
    """The current limit of one class; `observe()` each admitted request's latency."""

    def __init__(
        self,
        max_limit: int,
        *,
        min_limit: int,
        tolerance: float,
        slack_s: float,
        baseline_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_limit = max_limit
        self.min_limit = max(1, min(min_limit, max_limit))
        self.tolerance = tolerance
        self.slack_s = slack_s
        self.baseline_s = baseline_s
        self._clock = clock
        self._limit = float(max_limit)
        self._window_began = self._clock()
        self._window_sum = 0.0
        self._window_count = 0
        self._saturated = False
        # (closed at, window average), oldest first; the baseline is the least of them.
        self._windows: deque[tuple[float, float]] = deque()

    @property
    def limit(self) -> int:
        return int(self._limit)

    def baseline(self) -> float | None:
        """The best window average of the last `baseline_s` seconds (None before the first)."""
        return min((average for _, average in self._windows), default=None)

    def saturated(self) -> None:
        """A request found every slot taken: the limit, not the load, bounds this window."""
        self._saturated = True

    def observe(self, latency_s: float) -> None:
        self._window_sum += latency_s
        self._window_count += 1
        now = self._clock()
        if now - self._window_began >= WINDOW_S and self._window_count >= MIN_SAMPLES:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        average = self._window_sum / self._window_count
        while self._windows and now - self._windows[0][0] > self.baseline_s:
            self._windows.popleft()
        self._windows.append((now, average))
        target = self.tolerance * (self.baseline() or average) + self.slack_s
        gradient = min(1.0, target / average) if average > 0 else 1.0
        if gradient < 1.0:
            new_limit = self._limit * max(MIN_GRADIENT, gradient)
        elif self._saturated:
            new_limit = self._limit + math.sqrt(self._limit)
        else:
            new_limit = self._limit
        self._limit = min(float(self.max_limit), max(float(self.min_limit), new_limit))
        self._window_began, self._window_sum, self._window_count = now, 0.0, 0
        self._saturated = False
