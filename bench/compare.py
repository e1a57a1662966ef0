"""`make bench-compare` (`python -m bench.compare`): this tree against a baseline commit, in one run.

Figures from different runs are not comparable on a shared 2-core machine (other work shows
in every one), so the claim "no more than N% slower than before" is measured here: the quick
bench (`BENCH_QUICK=1 python -m bench`) runs alternately in a git worktree of the baseline
(BENCH_BASELINE, default the commit before durable runs landed) and in this tree, ROUNDS
times each, and the medians of the headline figures are compared. Writes
bench/results/compare-latest.json and prints the table.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cpu import mesh_cpu_ms

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# The last commit before runs became durable resources (issue 13): the figure the
# regression budget is measured against.
DEFAULT_BASELINE = "eb42350"
# Higher is better for throughput, lower for latency: the ratio is always "how much worse".
FIGURES = {
    "turns_per_s_c1": "higher",
    "turns_per_s_c16": "higher",
    "turns_per_s_c64": "higher",
    "turns_per_s_c64_gateway": "higher",
    "ttft_added_ms_p50_grpc": "lower",
    "ttft_added_ms_p50_gateway": "lower",
    # Computed from the per-process split, which the baseline's bench records too.
    "cpu_ms_per_turn_mesh_c16": "lower",
    "cpu_ms_per_turn_mesh_c64_gateway": "lower",
    # Cells the baseline's bench did not have: this tree's figure only.
    "ttft_ms_p50_c10_grpc": "lower",
    "ttft_ms_p50_c10_gateway": "lower",
}


def _log(message: str) -> None:
    print(f"[bench-compare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def quick_bench(tree: Path) -> dict[str, Any]:
    """One quick bench with `tree`'s code (its packages first on the path); its headline figures."""
    out = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    env = {**os.environ, "BENCH_QUICK": "1", "BENCH_RESULTS_DIR": str(out), "PYTHONPATH": str(tree)}
    try:
        subprocess.run([sys.executable, "-m", "bench"], cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
        # A baseline older than BENCH_RESULTS_DIR writes into its own tree.
        written = out / "latest.json" if (out / "latest.json").exists() else tree / "bench/results/latest.json"
        document: dict[str, Any] = json.loads(written.read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    figures: dict[str, Any] = {key: document.get(key) for key in FIGURES}
    # Where the difference goes: CPU per turn of each process, at 16 concurrent gRPC turns.
    throughput = document.get("details", {}).get("throughput", {})
    figures["cpu_ms_per_turn_c16"] = throughput.get("grpc_c16", {}).get("cpu_ms_per_turn")
    figures["cpu_ms_per_turn_c64_gateway"] = throughput.get("gateway_c64", {}).get("cpu_ms_per_turn")
    for key in ("c16", "c64_gateway"):
        split = figures[f"cpu_ms_per_turn_{key}"]
        figures[f"cpu_ms_per_turn_mesh_{key}"] = mesh_cpu_ms(split) if split else None
    return figures


def compare(baseline: list[dict[str, Any]], current: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for key, better in FIGURES.items():
        before = [run[key] for run in baseline if run.get(key) is not None]
        after = [run[key] for run in current if run.get(key) is not None]
        if not before or not after:
            now = round(statistics.median(after), 2) if after else None
            rows[key] = {"baseline": None, "current": now, "worse_pct": None}
            continue
        b, a = statistics.median(before), statistics.median(after)
        worse = (b - a) / b if better == "higher" else (a - b) / b
        rows[key] = {"baseline": round(b, 2), "current": round(a, 2), "worse_pct": round(100 * worse, 1)}
    return rows


def main() -> int:
    ref = os.environ.get("BENCH_BASELINE", DEFAULT_BASELINE)
    rounds = int(os.environ.get("BENCH_COMPARE_ROUNDS", "2"))
    budget_pct = float(os.environ.get("BENCH_REGRESSION_BUDGET_PCT", "10"))
    worktree = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(worktree), ref], cwd=ROOT, check=True)
    baseline: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    try:
        for round_number in range(1, rounds + 1):
            _log(f"round {round_number}/{rounds}: baseline {ref}")
            baseline.append(quick_bench(worktree))
            _log(f"round {round_number}/{rounds}: this tree")
            current.append(quick_bench(ROOT))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
    rows = compare(baseline, current)
    document = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "baseline_ref": ref,
        "current_ref": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "rounds": rounds,
        "budget_pct": budget_pct,
        "figures": rows,
        "runs": {"baseline": baseline, "current": current},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compare-latest.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"{'figure':<28} {'baseline':>10} {'current':>10} {'worse %':>8}")
    for key, row in rows.items():
        print(f"{key:<28} {row['baseline']!s:>10} {row['current']!s:>10} {row['worse_pct']!s:>8}")
    over = [key for key, row in rows.items() if row["worse_pct"] is not None and row["worse_pct"] > budget_pct]
    if over:
        print(f"over the {budget_pct:g}% regression budget: {', '.join(over)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
