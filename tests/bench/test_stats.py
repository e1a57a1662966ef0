"""Percentiles as numpy computes them (linear interpolation), without numpy."""

from __future__ import annotations

import math

from bench.stats import percentile, summary_ms


def test_percentile_interpolates_between_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert math.isclose(percentile(values, 99), 3.97)


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


def test_summary_is_in_milliseconds() -> None:
    summary = summary_ms([0.001, 0.002, 0.003])
    assert summary["n"] == 3 and summary["p50"] == 2.0 and summary["max"] == 3.0
