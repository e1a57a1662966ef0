"""The SLO check of a Locust run, on synthetic summaries and stats objects shaped like Locust's
(importing locust here would gevent-patch the whole test process; the real run is in
test_locustfile_run.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from loadtest.slo import DEFAULT_SLO_FILE, EntrySummary, Slo, check_slo, enforce_slo, load_slo, summaries_from_stats

SLO = Slo(max_fail_ratio=0.01, p95_ms={"/v1/sessions/[id]:chat": 3000, "*": 1000})


def entry(name: str, p95: float, requests: int = 100, failures: int = 0) -> EntrySummary:
    return EntrySummary(name=name, method="POST", num_requests=requests, num_failures=failures, p95_ms=p95)


def test_met_objectives_report_nothing() -> None:
    assert check_slo([entry("/v1/sessions/[id]:chat", 2900), entry("/v1/auth/login", 900)], SLO) == []


def test_slow_entry_misses_its_own_budget() -> None:
    problems = check_slo([entry("/v1/sessions/[id]:chat", 3100), entry("/v1/auth/login", 900)], SLO)
    assert len(problems) == 1 and "/v1/sessions/[id]:chat" in problems[0] and "3100" in problems[0]


def test_unlisted_entry_uses_the_default_budget() -> None:
    problems = check_slo([entry("/v1/auth/me", 1001)], SLO)
    assert len(problems) == 1 and "/v1/auth/me" in problems[0]


def test_fail_ratio_above_the_limit_is_a_miss() -> None:
    problems = check_slo([entry("/v1/auth/login", 10, requests=100, failures=2)], SLO)
    assert problems == ["fail ratio 2.00% > 1.00% (2/100)"]


def test_a_run_without_requests_is_a_miss() -> None:
    assert check_slo([], SLO) == ["no requests were made"]


def test_the_checked_in_slo_file_loads() -> None:
    slo = load_slo(DEFAULT_SLO_FILE)
    assert 0 <= slo.max_fail_ratio < 0.05
    assert slo.p95_budget("/v1/sessions/[id]:stream (ttft)") is not None
    assert slo.p95_budget("anything else") == slo.p95_ms["*"]


class FakeEntry:
    """The part of locust.stats.StatsEntry the checker reads."""

    def __init__(self, name: str, times_ms: list[float], failures: int) -> None:
        self.name = name
        self.method = "POST"
        self.num_requests = len(times_ms)
        self.num_failures = failures
        self._times = sorted(times_ms)

    def get_response_time_percentile(self, percent: float) -> float:
        return self._times[min(len(self._times) - 1, int(percent * len(self._times)))]


def _locust_stats(chat_ms: list[float], failures: int) -> SimpleNamespace:
    entry = FakeEntry("/v1/sessions/[id]:chat", chat_ms, failures)
    return SimpleNamespace(entries={(entry.name, entry.method): entry})


def test_locust_stats_become_summaries_with_p95() -> None:
    summaries = summaries_from_stats(_locust_stats([100.0] * 95 + [5000.0] * 5, failures=0))
    assert len(summaries) == 1
    assert summaries[0].num_requests == 100
    assert summaries[0].p95_ms == 5000


def test_enforce_sets_exit_code_one_on_a_miss(tmp_path: Path) -> None:
    slo_file = tmp_path / "slo.yaml"
    slo_file.write_text('max_fail_ratio: 0.0\np95_ms:\n  "*": 50\n')
    environment = SimpleNamespace(stats=_locust_stats([200.0] * 20, failures=0), process_exit_code=None)
    problems = enforce_slo(environment, slo_file)
    assert problems and environment.process_exit_code == 1


def test_enforce_leaves_exit_code_alone_when_met(tmp_path: Path) -> None:
    slo_file = tmp_path / "slo.yaml"
    slo_file.write_text('max_fail_ratio: 0.0\np95_ms:\n  "*": 5000\n')
    environment = SimpleNamespace(stats=_locust_stats([200.0] * 20, failures=0), process_exit_code=None)
    assert enforce_slo(environment, slo_file) == []
    assert environment.process_exit_code is None
