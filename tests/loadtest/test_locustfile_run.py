"""The locustfile's users run against the real mesh: a short headless Locust run (a subprocess,
since the locustfile patches grpc for gevent) through a gateway of this test's own with rate
limits off, then the CSV must show no failures and both stream entries of each user."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.mesh import GATEWAY_READY, Mesh, free_port
from meshctl.processes import ROOT, ChildProcess, python_module


@pytest.fixture(scope="module")
def loadtest_gateway(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**mesh.env, "GATEWAY_PORT": str(free_port()), "RATE_LIMIT_ENABLED": "false"}
    log = tmp_path_factory.mktemp("loadtest") / "gateway.log"
    child = ChildProcess("loadtest-gateway", python_module("gateway"), env, log, GATEWAY_READY).start()
    try:
        yield child.ready_match["url"].rstrip("/")
    finally:
        child.stop()


def test_both_users_run_their_tasks_without_failures(mesh: Mesh, loadtest_gateway: str, tmp_path: Path) -> None:
    slo_file = tmp_path / "slo.yaml"
    slo_file.write_text('max_fail_ratio: 0.0\np95_ms:\n  "*": 60000\n')
    prefix = tmp_path / "run"
    command = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
        "--headless", "-u", "6", "-r", "6", "-t", "12s", "--stop-timeout", "20",
        "--host", loadtest_gateway, "--csv", str(prefix), "--only-summary",
        "--auth-addr", mesh.addr("auth"), "--sessions-addr", mesh.addr("sessions"),
        "--agent-addr", mesh.addr("agent"), "--think-min", "0.1", "--think-max", "0.3",
        "--slo-file", str(slo_file),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with (tmp_path / "run_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle) if row["Name"] != "Aggregated"}
    assert all(int(row["Failure Count"]) == 0 for row in rows.values()), rows
    for name in (
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/sessions/[id]:stream (ttft)",
        "/v1/sessions/[id]:stream (full)",
        "/agentmesh.agent.v1.AgentService/StreamChat (ttft)",
        "/agentmesh.agent.v1.AgentService/StreamChat",
        "/v1/sessions/[id]:stream (dropped)",
        "/v1/sessions/[id]/runs/[id]:stream (resume)",
    ):
        assert name in rows and int(rows[name]["Request Count"]) > 0, sorted(rows)
    # The first token cannot come after the whole stream.
    ttft = float(rows["/v1/sessions/[id]:stream (ttft)"]["Median Response Time"])
    full = float(rows["/v1/sessions/[id]:stream (full)"]["Median Response Time"])
    assert ttft <= full
