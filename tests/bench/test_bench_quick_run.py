"""`BENCH_QUICK=1 python -m bench` end to end: its own mesh, every required key in the JSON.
About two minutes on two cores, so it is kept out of `make test`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.results import REQUIRED_KEYS
from meshctl.processes import ROOT


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_bench_writes_every_required_key(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_QUICK": "1", "BENCH_RESULTS_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "bench"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=580, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert set(REQUIRED_KEYS) <= set(latest)
    assert latest["quick"] is True and latest["memory_search_p95_ms_100k"] is None
    assert latest["memory_search_p95_ms_10k"] > 0 and latest["token_verify_us_p50"] > 0
    assert latest["turns_per_s_c1"] > 0 and latest["ttft_added_ms_p50_gateway"] is not None
    assert "turns_per_s_c16" in run.stdout
