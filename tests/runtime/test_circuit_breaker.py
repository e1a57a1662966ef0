"""The per-model circuit breaker (runtime/llm/circuit_breaker.py) beyond open-probe-close,
which tests/llm/test_llm_client.py covers: failed probes, abandoned probes, the gauge."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from runtime.llm.circuit_breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def open_breaker(clock: Clock, gauge: Gauge | None = None) -> CircuitBreaker:
    breaker = CircuitBreaker("m", failure_threshold=2, cooldown_s=30, gauge=gauge, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.is_open
    return breaker


def test_retry_in_counts_down_the_cooldown() -> None:
    clock = Clock()
    breaker = open_breaker(clock)
    assert breaker.retry_in_s() == 30
    clock.now = 20
    assert breaker.retry_in_s() == 10
    clock.now = 45
    assert breaker.retry_in_s() == 0.0


def test_a_failed_probe_opens_the_circuit_for_another_cooldown() -> None:
    clock = Clock()
    breaker = open_breaker(clock)
    clock.now = 31
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.is_open and not breaker.allow()
    assert breaker.retry_in_s() == 30
    clock.now = 62
    assert breaker.allow()


def test_a_probe_released_without_a_verdict_lets_the_next_one_through() -> None:
    clock = Clock()
    breaker = open_breaker(clock)
    clock.now = 31
    assert breaker.allow() and not breaker.allow()
    breaker.release_probe()
    assert breaker.allow()  # still open: exactly one probe again
    assert breaker.is_open and not breaker.allow()


def test_a_success_below_the_threshold_forgets_earlier_failures() -> None:
    breaker = CircuitBreaker("m", failure_threshold=2, cooldown_s=30, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert not breaker.is_open and breaker.allow()


def test_the_gauge_shows_open_as_one_and_closed_as_zero() -> None:
    gauge = Gauge("breaker_open", "open circuit", ["model"], registry=CollectorRegistry())
    clock = Clock()
    breaker = open_breaker(clock, gauge)
    assert gauge.labels(model="m")._value.get() == 1
    clock.now = 31
    assert breaker.allow()
    breaker.record_success()
    assert gauge.labels(model="m")._value.get() == 0
