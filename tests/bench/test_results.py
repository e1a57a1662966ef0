"""The benchmark's JSON: every required key, read from the measured sections, null where a
section was not measured, written as latest.json plus a timestamped copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.results import REQUIRED_KEYS, headline, render_table, write_results


def measured_details() -> dict[str, Any]:
    summary = {"n": 10, "p50": 1.0, "p95": 2.0, "p99": 3.0, "mean": 1.5, "max": 3.0}
    return {
        "notes": [],
        "overhead": {
            "concurrency": 10,
            "llm": {"ttft_ms": summary, "turn_ms": summary, "failed": 0},
            "grpc": {"ttft_ms": summary, "turn_ms": summary, "failed": 0},
            "gateway": {"ttft_ms": summary, "turn_ms": summary, "failed": 0},
            "grpc_added_ms": {"ttft_p50": 4.0, "ttft_p99": 9.0, "turn_p50": 5.0},
            "gateway_added_ms": {"ttft_p50": 7.0, "ttft_p99": 12.0, "turn_p50": 8.0},
        },
        "throughput": {f"grpc_c{c}": {"turns_per_s": float(c)} for c in (1, 16, 64)},
        "memory": {
            "10k": {"hnsw_search_ms": summary, "recall_at_10": 0.99},
            "100k": {"hnsw_search_ms": {**summary, "p95": 6.0}, "recall_at_10": 0.97},
        },
        "token_verify": {"cached_us_p50": 0.5, "first_us_p50": 120.0},
        "gateway": {"latency": {"added_ms_p50": 1.2, "added_ms_p99": 4.0}},
    }


def test_every_required_key_comes_from_its_section() -> None:
    heads = headline(measured_details(), quick=False)
    assert all(key in heads for key in REQUIRED_KEYS)
    assert heads["ttft_added_ms_p50_grpc"] == 4.0
    assert heads["ttft_added_ms_p99_gateway"] == 12.0
    assert heads["turn_added_ms_p50_gateway"] == 8.0
    assert heads["turns_per_s_c64"] == 64.0
    assert heads["memory_search_p95_ms_100k"] == 6.0
    assert heads["memory_recall_at_10_100k"] == 0.97
    assert heads["token_verify_us_p50"] == 0.5
    assert heads["gateway_added_ms_p50"] == 1.2
    assert isinstance(heads["cpu_count"], int) and heads["commit"]


def test_quick_run_marks_the_100k_keys_not_measured() -> None:
    details = measured_details()
    del details["memory"]["100k"]
    heads = headline(details, quick=True)
    assert heads["memory_search_p95_ms_100k"] is None
    assert heads["memory_recall_at_10_100k"] is None
    assert any("100k" in note for note in heads["notes"])


def test_results_are_written_as_latest_and_a_timestamped_copy(tmp_path: Path) -> None:
    document = write_results(measured_details(), quick=False, directory=tmp_path)
    latest = json.loads((tmp_path / "latest.json").read_text())
    copies = [p for p in tmp_path.glob("bench-*.json")]
    assert len(copies) == 1 and json.loads(copies[0].read_text()) == latest
    assert set(REQUIRED_KEYS) <= set(latest)
    assert latest["details"]["throughput"]["grpc_c16"]["turns_per_s"] == 16.0
    table = render_table(document)
    assert "turns_per_s_c16" in table and "ttft_added_ms_p50_gateway" in table
