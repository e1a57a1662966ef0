"""The soak's leak rule: a line keeps growing, a curve that levels off does not."""

from __future__ import annotations

from bench.soak import Sample, judge, keeps_growing


def test_linear_growth_keeps_growing() -> None:
    assert keeps_growing([100, 130, 160, 190, 220, 250], tolerance=4)


def test_growth_that_levels_off_does_not() -> None:
    assert not keeps_growing([100, 160, 190, 198, 200, 201], tolerance=4)


def test_noise_within_tolerance_does_not() -> None:
    assert not keeps_growing([12, 13, 12, 14, 13, 14], tolerance=4)


def test_too_few_samples_are_not_judged() -> None:
    assert not keeps_growing([1, 100, 200], tolerance=4)


def _series(process: str, threads: list[int], rss: list[float]) -> list[Sample]:
    return [Sample(float(i), process, r, t, 20, 5, i * 100) for i, (t, r) in enumerate(zip(threads, rss, strict=True))]


def test_judge_names_the_leaking_process_and_metric() -> None:
    # The seed's leak: a thread per memory call.
    leaking = _series("agent", [12, 300, 600, 900, 1200, 1500, 1800], [150, 160, 170, 180, 190, 200, 210])
    steady = _series("memory", [12, 12, 12, 12, 12, 12, 12], [120, 125, 126, 126, 127, 126, 126])
    problems, enough = judge(leaking + steady)
    assert enough
    assert any(p.startswith("agent: threads") for p in problems)
    assert not any(p.startswith("memory") for p in problems)
