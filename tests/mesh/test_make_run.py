"""`make run`'s launcher: everything up, every address printed, everything down on SIGTERM,
and the data still there on the next start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from meshctl.processes import ROOT
from tests.conftest import TEST_ENV, unique_email
from tests.support.users import MeshUser

ADDRESS = re.compile(r"^\s+auth\s+grpc (\S+)", re.MULTILINE)


def start_launcher(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, **TEST_ENV}
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "meshctl", "run", "--data-dir", str(data_dir), "--ephemeral-ports"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ""
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    while "logs in" not in output:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"launcher exited early:\n{output}")
        output += line
        assert time.monotonic() < deadline, output
    return process, output


def stop_launcher(process: subprocess.Popen[str]) -> tuple[int, set[int]]:
    children = {child.pid for child in psutil.Process(process.pid).children(recursive=True)}
    process.send_signal(signal.SIGTERM)
    code = process.wait(60)
    return code, children


def register_and_login(addr: str, email: str, *, register: bool) -> str:
    with grpc.insecure_channel(addr) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        if register:
            stub.Register(auth_pb2.RegisterRequest(email=email, password=MeshUser.PASSWORD), timeout=10)
        return stub.Login(auth_pb2.LoginRequest(email=email, password=MeshUser.PASSWORD), timeout=10).access_token


def test_launcher_starts_prints_stops_and_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    process, output = start_launcher(data_dir)
    try:
        assert "agentmesh is running" in output
        for name in ("auth", "sessions"):
            assert re.search(rf"^\s+{name}\s+grpc 127\.0\.0\.1:\d+", output, re.MULTILINE), output
        email = unique_email("launcher")
        assert register_and_login(ADDRESS.search(output).group(1), email, register=True)
    finally:
        code, children = stop_launcher(process)
    assert code == 0
    assert children, "the launcher started no child processes"
    leftovers = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert leftovers == []

    process, output = start_launcher(data_dir)
    try:
        assert register_and_login(ADDRESS.search(output).group(1), email, register=False)
    finally:
        code, _ = stop_launcher(process)
    assert code == 0
