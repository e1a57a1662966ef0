"""The SLO check of a Locust run: overall failure ratio and each entry's p95 against
`loadtest/slo.yaml`. Works on plain summaries so it can be tested without a run."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SLO_FILE = Path(__file__).resolve().parent / "slo.yaml"
ANY_ENTRY = "*"


@dataclass(frozen=True)
class Slo:
    max_fail_ratio: float
    p95_ms: dict[str, float] = field(default_factory=dict)

    def p95_budget(self, name: str) -> float | None:
        return self.p95_ms.get(name, self.p95_ms.get(ANY_ENTRY))


@dataclass(frozen=True)
class EntrySummary:
    name: str
    method: str
    num_requests: int
    num_failures: int
    p95_ms: float


def load_slo(path: Path = DEFAULT_SLO_FILE) -> Slo:
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    p95 = {str(name): float(ms) for name, ms in (data.get("p95_ms") or {}).items()}
    return Slo(max_fail_ratio=float(data.get("max_fail_ratio", 0.0)), p95_ms=p95)


def summaries_from_stats(stats: Any) -> list[EntrySummary]:
    """Locust's RequestStats -> summaries (p95 from Locust's own response-time buckets)."""
    return [
        EntrySummary(
            name=entry.name,
            method=entry.method or "",
            num_requests=entry.num_requests,
            num_failures=entry.num_failures,
            p95_ms=float(entry.get_response_time_percentile(0.95) or 0.0),
        )
        for entry in stats.entries.values()
    ]


def check_slo(entries: Iterable[EntrySummary], slo: Slo) -> list[str]:
    """Every missed objective, as a sentence; empty when all are met."""
    entries = list(entries)
    problems: list[str] = []
    requests = sum(e.num_requests for e in entries)
    failures = sum(e.num_failures for e in entries)
    if requests == 0:
        return ["no requests were made"]
    fail_ratio = failures / requests
    if fail_ratio > slo.max_fail_ratio:
        problems.append(f"fail ratio {fail_ratio:.2%} > {slo.max_fail_ratio:.2%} ({failures}/{requests})")
    for entry in entries:
        budget = slo.p95_budget(entry.name)
        if budget is not None and entry.num_requests and entry.p95_ms > budget:
            problems.append(f"p95 of {entry.method} {entry.name} is {entry.p95_ms:.0f} ms > {budget:.0f} ms")
    return problems


def enforce_slo(environment: Any, slo_file: Path = DEFAULT_SLO_FILE) -> list[str]:
    """The `quitting` check: prints the verdict and sets exit code 1 on a miss."""
    slo = load_slo(slo_file)
    problems = check_slo(summaries_from_stats(environment.stats), slo)
    if problems:
        print("SLO missed:\n  " + "\n  ".join(problems), flush=True)
        environment.process_exit_code = 1
    else:
        entries = len(environment.stats.entries)
        print(f"SLOs met ({entries} entries, fail ratio <= {slo.max_fail_ratio:.2%})", flush=True)
    return problems
