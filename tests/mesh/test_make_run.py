"""`make run`'s launcher: everything up, every address and the database printed; a killed
service restarted while the rest keep serving; everything down, embedded Postgres included, on
SIGTERM or Ctrl-C to the process group; a taken port named with its holder; data kept."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from meshctl.mesh import GATEWAY_PORT, OFFLINE_LLM_PORT, SERVICES
from meshctl.ports import Clash, Holder, describe_clashes, port_is_free
from meshctl.postgres import postmaster_pid
from meshctl.processes import ROOT
from tests.support.mesh import TEST_ENV
from tests.support.users import MeshUser, unique_email
from tests.support.waiting import eventually_sync

ADDRESS = re.compile(r"^\s+auth\s+grpc (\S+)", re.MULTILINE)
LISTENING = re.compile(r"(?:grpc|metrics http://|https?://)(127\.0\.0\.1:\d+)")


class Launcher:
    """`python -m meshctl run` in its own process group, as a terminal runs `make run`; its
    console (stdout and stderr) is collected line by line."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        env = {**os.environ, **TEST_ENV}
        env.pop("DATABASE_URL", None)
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meshctl", "run", "--data-dir", str(data_dir), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float = 120) -> re.Match[str]:
        def printed() -> re.Match[str]:
            exited = self.process.poll() is not None
            if exited:
                self._reader.join(5)  # the last lines may still be in the pipe
            match = re.search(pattern, self.output, re.MULTILINE)
            if match:
                return match
            if exited:
                # Not an AssertionError: waiting longer cannot help.
                raise RuntimeError(f"launcher exited ({self.process.returncode}) before {pattern!r}:\n{self.output}")
            raise AssertionError(f"no {pattern!r} within {timeout_s}s:\n{self.output}")

        return eventually_sync(printed, timeout_s=timeout_s, interval_s=0.1)

    def wait_ready(self) -> str:
        self.wait_for(r"logs in ")
        return self.output

    def children(self) -> dict[str, psutil.Process]:
        """The launcher's children by module (`services.auth`, `gateway`, `offline_llm`)."""
        found = {}
        for child in psutil.Process(self.process.pid).children():
            cmdline = child.cmdline()
            if "-m" in cmdline:
                found[cmdline[cmdline.index("-m") + 1]] = child
        return found

    def ports(self) -> list[int]:
        return sorted({int(addr.rsplit(":", 1)[1]) for addr in LISTENING.findall(self.output)})

    def stop(self, sig: signal.Signals = signal.SIGTERM, *, group: bool = False) -> int:
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
        return self.process.wait(60)

    def kill_everything(self) -> None:
        """Test clean-up when an assertion failed half-way: nothing may outlive the test."""
        try:
            procs = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        pid = postmaster_pid(self.data_dir)
        if pid:
            os.kill(pid, signal.SIGTERM)


@pytest.fixture
def launcher_factory(tmp_path: Path) -> Iterator:
    started: list[Launcher] = []

    def start(*args: str, data_dir: Path | None = None) -> Launcher:
        launcher = Launcher(data_dir or tmp_path / "data", *args)
        started.append(launcher)
        return launcher

    yield start
    for launcher in started:
        if launcher.process.poll() is None:
            launcher.kill_everything()


def register_and_login(addr: str, email: str, *, register: bool) -> str:
    with grpc.insecure_channel(addr) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        if register:
            stub.Register(auth_pb2.RegisterRequest(email=email, password=MeshUser.PASSWORD), timeout=10)
        return stub.Login(auth_pb2.LoginRequest(email=email, password=MeshUser.PASSWORD), timeout=10).access_token


def serving(addr: str) -> bool:
    try:
        with grpc.insecure_channel(addr) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def assert_all_gone(pids: list[int], ports: list[int], data_dir: Path, postgres_pid: int) -> None:

    def gone() -> None:
        alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        assert alive == [], f"processes left running: {alive}"
        assert not psutil.pid_exists(postgres_pid), "the embedded Postgres was left running"

    eventually_sync(gone, timeout_s=10, interval_s=0.1)
    assert postmaster_pid(data_dir) is None
    assert [port for port in ports if not port_is_free(port)] == []


def test_launcher_starts_prints_stops_and_keeps_data(launcher_factory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    launcher = launcher_factory("--ephemeral-ports", data_dir=data_dir)
    output = launcher.wait_ready()
    assert "agentmesh is running" in output
    for name in ("auth", "sessions"):
        assert re.search(rf"^\s+{name}\s+grpc 127\.0\.0\.1:\d+", output, re.MULTILINE), output
    # Where the data is: the embedded database's URL and a psql command line that opens it.
    url = re.search(r"^\s+database\s+(postgresql://\S+)", output, re.MULTILINE)
    assert url and str(data_dir / "pgdata") in url.group(1), output
    psql = re.search(r"^\s+psql\s+(\S+) '(\S+)'$", output, re.MULTILINE)
    assert psql, output
    answer = subprocess.run(
        [psql.group(1), psql.group(2), "-tAc", "select 1"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert answer.stdout.strip() == "1", answer.stderr
    assert "Warning" not in output and "warning" not in output, output

    email = unique_email("launcher")
    assert register_and_login(ADDRESS.search(output).group(1), email, register=True)
    children = [child.pid for child in launcher.children().values()]
    assert len(children) >= 3, launcher.children()
    postgres = postmaster_pid(data_dir)
    assert postgres
    ports = launcher.ports()
    assert launcher.stop(signal.SIGTERM) == 0
    assert_all_gone(children, ports, data_dir, postgres)

    launcher = launcher_factory("--ephemeral-ports", data_dir=data_dir)
    output = launcher.wait_ready()
    assert register_and_login(ADDRESS.search(output).group(1), email, register=False)
    assert launcher.stop(signal.SIGTERM) == 0


def test_a_killed_service_is_restarted_and_the_mesh_keeps_answering(launcher_factory) -> None:
    launcher = launcher_factory("--ephemeral-ports")
    output = launcher.wait_ready()
    auth_addr = ADDRESS.search(output).group(1)
    sessions_addr = re.search(r"^\s+sessions\s+grpc (\S+)", output, re.MULTILINE).group(1)
    email = unique_email("supervised")
    register_and_login(auth_addr, email, register=True)
    children = launcher.children()
    old_auth = children["services.auth"]

    old_auth.kill()  # SIGKILL: no drain, no goodbye
    launcher.wait_for(r"auth \(pid \d+\) stopped unexpectedly \(signal SIGKILL\); restarting in", 30)
    # The others keep serving while auth is down and coming back.
    assert serving(sessions_addr)
    launcher.wait_for(r"auth: back, serving again", 90)
    assert launcher.process.poll() is None, launcher.output
    new_auth = launcher.children()["services.auth"]
    assert new_auth.pid != old_auth.pid
    # Same port as before, and its data: the user registered before the crash logs in.
    assert serving(auth_addr)
    assert register_and_login(auth_addr, email, register=False)
    others = {name: child.pid for name, child in children.items() if name != "services.auth"}
    assert {name: child.pid for name, child in launcher.children().items() if name != "services.auth"} == others
    assert launcher.stop(signal.SIGTERM) == 0


def test_ctrl_c_to_the_process_group_stops_every_child_and_the_embedded_postgres(launcher_factory) -> None:
    launcher = launcher_factory("--ephemeral-ports")
    launcher.wait_ready()
    children = [child.pid for child in launcher.children().values()]
    postgres = postmaster_pid(launcher.data_dir)
    assert postgres and children
    ports = launcher.ports()
    assert len(ports) >= 6, launcher.output

    # What a terminal sends on Ctrl-C: SIGINT to every process in the foreground group.
    assert launcher.stop(signal.SIGINT, group=True) == 0
    assert_all_gone(children, ports, launcher.data_dir, postgres)
    assert "embedded Postgres stopped" in launcher.output


@pytest.mark.slow  # two launches of the whole mesh (~30 s): `make test-slow`
def test_children_do_not_outlive_a_launcher_that_is_killed(launcher_factory) -> None:
    launcher = launcher_factory("--ephemeral-ports")
    launcher.wait_ready()
    children = [child.pid for child in launcher.children().values()]
    ports = launcher.ports()
    launcher.process.kill()  # SIGKILL: no handler runs, no clean-up code
    launcher.process.wait(10)

    def children_gone() -> None:
        alive = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
        assert alive == [], "services kept running, holding their ports, after the launcher died"

    eventually_sync(children_gone, timeout_s=40, interval_s=0.2)
    assert [port for port in ports if not port_is_free(port)] == []
    # The postmaster is not our child (pg_ctl daemonises it); the next launcher on this data
    # directory joins it and stops it (pgserver's stale handle of the killed launcher is dropped).
    postgres = postmaster_pid(launcher.data_dir)
    launcher = launcher_factory("--ephemeral-ports", data_dir=launcher.data_dir)
    launcher.wait_ready()
    assert launcher.stop(signal.SIGINT, group=True) == 0
    if postgres:
        assert not psutil.pid_exists(postgres) or psutil.Process(postgres).status() == "zombie"
    assert postmaster_pid(launcher.data_dir) is None


def default_ports() -> list[int]:
    services = [port for *_, grpc_port, metrics_port in SERVICES for port in (grpc_port, metrics_port)]
    return [OFFLINE_LLM_PORT, GATEWAY_PORT, *services]


def test_a_taken_port_is_named_with_the_process_holding_it(launcher_factory) -> None:
    port = next((port for port in default_ports() if port_is_free(port)), None)
    if port is None:
        pytest.skip("every default port is taken on this machine")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, time\n"
            "s = socket.socket()\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1', {port}))\n"
            "s.listen(); print('listening', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "listening"
        launcher = launcher_factory()  # the default ports, as `make run`
        code = launcher.process.wait(60)
        launcher._reader.join(5)
        output = launcher.output
        assert code == 1, output
        assert re.search(rf"^\s+{port}\s+\(.+\): pid {holder.pid}, .*python", output, re.MULTILINE), output
        assert "--ephemeral-ports" in output
        assert "exited with" not in output, output
        assert "stopping" not in output, "nothing was started, so nothing is stopped"
        # Nothing was started: no Postgres, no service.
        assert postmaster_pid(launcher.data_dir) is None
    finally:
        holder.kill()
        holder.wait(10)


def test_the_clash_message_points_at_another_make_run() -> None:
    child_of_launcher = Holder(4242, "/x/python -m services.auth", 4200, "/x/python -m meshctl run")
    stranger = Holder(777, "nginx: master process", 1, "/sbin/init")
    message = describe_clashes([Clash(50051, "auth gRPC", child_of_launcher), Clash(8080, "gateway HTTP", stranger)])
    assert "50051  (auth gRPC): pid 4242, /x/python -m services.auth" in message
    assert "8080   (gateway HTTP): pid 777, nginx: master process" in message
    assert "Another `make run` is running (launcher pid 4200)" in message
    assert "kill 4200" in message
    assert "make run MESH_ARGS=--ephemeral-ports" in message


def test_a_port_taken_by_a_listener_is_not_free_and_its_holder_is_found() -> None:
    from meshctl.ports import port_holder

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free(port)
        holder = port_holder(port)
        assert holder is not None and holder.pid == os.getpid()
    assert port_is_free(port)
