"""A per-process health view of each model: skip one that keeps failing, probe it later.

It is local on purpose: each replica learns for itself, nothing is shared, and a
wrong guess costs only one probe after the cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Gauge


class CircuitBreaker:
    def __init__(
        self,
        model: str,
        *,
        failure_threshold: int,
        cooldown_s: float,
        gauge: Gauge | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._model = model
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._gauge = gauge
        self._failures = 0
        self._open_until = 0.0
        self._probing = False
        self._show(0)

    def _show(self, value: int) -> None:
        if self._gauge is not None:
            self._gauge.labels(model=self._model).set(value)

    @property
    def is_open(self) -> bool:
        return self._failures >= self._threshold

    def retry_in_s(self) -> float:
        return max(0.0, self._open_until - self._clock())

    def allow(self) -> bool:
        """True if a call may go to the model; after the cool-down one probe goes through."""
        if not self.is_open:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        if self._failures or self._probing:
            self._failures = 0
            self._probing = False
            self._show(0)

    def record_failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self.is_open:
            self._open_until = self._clock() + self._cooldown_s
            self._show(1)

    def release_probe(self) -> None:
        """A probe that ended without a verdict (cancelled, bad request) lets the next one through."""
        self._probing = False
