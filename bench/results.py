"""The benchmark's JSON: the headline keys every run must have, the details beside them,
and the files (`bench/results/latest.json` plus a timestamped copy)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

# Milliseconds, per second, ratios; None means "not measured in this run" (see `notes`).
REQUIRED_KEYS = (
    "ttft_added_ms_p50_grpc",
    "ttft_added_ms_p50_gateway",
    "ttft_added_ms_p99_gateway",
    "turn_added_ms_p50_gateway",
    "turns_per_s_c1",
    "turns_per_s_c16",
    "turns_per_s_c64",
    "cpu_ms_per_turn_c16",
    "ttft_ms_p50_c10_grpc",
    "ttft_ms_p50_c10_gateway",
    "memory_search_p95_ms_10k",
    "memory_search_p95_ms_100k",
    "memory_recall_at_10_100k",
    "token_verify_us_p50",
    "gateway_added_ms_p50",
    "cpu_count",
    "commit",
)


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty.strip() else sha


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _dig(data: dict[str, Any], *path: str) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def headline(details: dict[str, Any], *, quick: bool) -> dict[str, Any]:
    """The required keys, each read from the detailed sections (None where not measured)."""
    heads: dict[str, Any] = {
        "ttft_added_ms_p50_grpc": _dig(details, "overhead", "grpc_added_ms", "ttft_p50"),
        "ttft_added_ms_p50_gateway": _dig(details, "overhead", "gateway_added_ms", "ttft_p50"),
        "ttft_added_ms_p99_gateway": _dig(details, "overhead", "gateway_added_ms", "ttft_p99"),
        "turn_added_ms_p50_gateway": _dig(details, "overhead", "gateway_added_ms", "turn_p50"),
        "turns_per_s_c1": _dig(details, "throughput", "grpc_c1", "turns_per_s"),
        "turns_per_s_c16": _dig(details, "throughput", "grpc_c16", "turns_per_s"),
        "turns_per_s_c64": _dig(details, "throughput", "grpc_c64", "turns_per_s"),
        "turns_per_s_c64_gateway": _dig(details, "throughput", "gateway_c64", "turns_per_s"),
        "cpu_ms_per_turn_c16": _dig(details, "throughput", "grpc_c16", "cpu_ms_per_turn_mesh"),
        "cpu_ms_per_turn_c64_gateway": _dig(details, "throughput", "gateway_c64", "cpu_ms_per_turn_mesh"),
        "ttft_ms_p50_c10_grpc": _dig(details, "throughput", "grpc_stream_c10", "ttft_ms", "p50"),
        "ttft_ms_p50_c10_gateway": _dig(details, "throughput", "gateway_stream_c10", "ttft_ms", "p50"),
        "memory_search_p95_ms_10k": _dig(details, "memory", "10k", "hnsw_search_ms", "p95"),
        "memory_search_p95_ms_100k": _dig(details, "memory", "100k", "hnsw_search_ms", "p95"),
        "memory_exact_p95_ms_100k": _dig(details, "memory", "100k", "exact_search_ms", "p95"),
        "memory_recall_at_10_10k": _dig(details, "memory", "10k", "recall_at_10"),
        "memory_recall_at_10_100k": _dig(details, "memory", "100k", "recall_at_10"),
        "token_verify_us_p50": _dig(details, "token_verify", "cached_us_p50"),
        "token_verify_first_us_p50": _dig(details, "token_verify", "first_us_p50"),
        "gateway_added_ms_p50": _dig(details, "gateway", "latency", "added_ms_p50"),
        "gateway_added_ms_p99": _dig(details, "gateway", "latency", "added_ms_p99"),
        "gateway_requests_per_s_c64": _dig(details, "gateway", "throughput", "gateway", "requests_per_s"),
        "direct_grpc_requests_per_s_c64": _dig(details, "gateway", "throughput", "direct_grpc", "requests_per_s"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "commit": git_commit(),
        "quick": quick,
    }
    notes = list(details.get("notes", []))
    if quick:
        notes.append("BENCH_QUICK=1: fewer turns and calls; 100k memories not loaded, so the 100k keys are null")
    heads["notes"] = notes
    return heads


def write_results(details: dict[str, Any], *, quick: bool, directory: Path = RESULTS_DIR) -> dict[str, Any]:
    document = {
        **headline(details, quick=quick),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "details": details,
    }
    missing = [key for key in REQUIRED_KEYS if key not in document]
    if missing:
        raise AssertionError(f"bench results lack {missing}")
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (directory / f"bench-{stamp}{'-quick' if quick else ''}.json").write_text(text)
    (directory / "latest.json").write_text(text)
    return document


def render_table(document: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        if value is None:
            return "not measured"
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
        return str(value)

    details = document.get("details", {})
    rows: list[tuple[str, str, str]] = []
    overhead = details.get("overhead") or {}
    if overhead:
        for path in ("llm", "grpc", "gateway"):
            if path in overhead:
                ttft = overhead[path]["ttft_ms"]
                turn = overhead[path]["turn_ms"]
                failed = overhead[path]["failed"]
                rows.append(
                    (
                        f"turn via {path} (c{overhead['concurrency']}) ttft p50/p99 ms",
                        f"{fmt(ttft.get('p50'))} / {fmt(ttft.get('p99'))}",
                        f"turn p50/p99 {fmt(turn.get('p50'))} / {fmt(turn.get('p99'))} ms, failed {failed}",
                    )
                )
    runs = details.get("runs") or {}
    if runs:
        wait = runs["first_replayed_event_ms"]
        rows.append(
            (
                "reconnect -> first replayed event p50/p99 ms",
                f"{fmt(wait.get('p50'))} / {fmt(wait.get('p99'))}",
                f"{runs['reconnects']} reconnects, out of order {runs['out_of_order']}",
            )
        )
    endings = ("_gateway", "_grpc", "_c16", "_10k", "_100k", "_c64", "_p99", "_first_us_p50")
    extra_keys = [k for k in document if k.endswith(endings)]
    for key in dict.fromkeys([*REQUIRED_KEYS, *extra_keys]):
        if key not in ("commit", "cpu_count"):
            rows.append((key, fmt(document.get(key)), ""))
    rows.append(("cpu", f"{document.get('cpu_count')} x {document.get('cpu_model')}", ""))
    rows.append(("commit", str(document.get("commit")), ""))
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {value:>22}  {extra}".rstrip() for name, value, extra in rows]
    for note in document.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
