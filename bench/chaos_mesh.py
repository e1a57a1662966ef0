"""The chaos suite's mesh: its own embedded Postgres and ports in a temporary folder, its
processes watched by meshctl's Supervisor from a thread (as `make run` does)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.mesh_run import BENCH_ENV
from bench.postgres_faults import postgres_pids, signal_all
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from meshctl.supervisor import Supervisor

# The chaos mesh: the benchmark settings, a model with some pace (turns overlap faults), tokens
# that outlive the suite, and hand-off retries capped at 10 s so a drained outbox is seen soon
# after a receiver returns (the default cap, 300 s, is for production fleets).
CHAOS_ENV = {
    **BENCH_ENV,
    "OFFLINE_LLM_TTFT_MS": "50",
    "OFFLINE_LLM_TOKENS_PER_S": "400",
    "ACCESS_TOKEN_TTL_S": "7200",
    "HANDOFF_MAX_BACKOFF_S": "10",
    "LLM_TIMEOUT_S": "10",
    "LOG_LEVEL": "INFO",
    # Recall only exact repeats: a fact the model was shown is not stored again, so with recall
    # on, a turn's new fact could be dropped as a near-repeat and leave no idempotency key to
    # check. Memory is still searched every turn; what is checked is that every write arrived.
    "MEMORY_MIN_SCORE": "1",
}
# Never someone else's database or model: the suite freezes and restarts its own.
ISOLATION_ENV = {"DATABASE_URL": "", "LLM_BASE_URL": "", "OPENAI_API_KEY": ""}
TICK_S = 0.2


def chaos_log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class SupervisedMesh:
    """A Mesh whose processes meshctl's Supervisor watches from a thread (as `make run` does).
    `hold()` takes a process out of its watch (a service kept down); `release()` hands it back
    dead, so the supervisor itself starts it again."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.lock = threading.Lock()
        self.reports: list[str] = []
        self.supervisor = Supervisor(mesh.processes, self._report)
        self.held: dict[str, ChildProcess] = {}
        self.manual_restarts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chaos-supervisor", daemon=True)

    def _report(self, line: str) -> None:
        self.reports.append(line)
        chaos_log(f"supervisor: {line}")

    def _watch(self) -> None:
        while not self._stop.wait(TICK_S):
            with self.lock:
                self.supervisor.tick()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def pgdata(self) -> Path:
        return (self.mesh.data_dir / "pgdata").resolve()

    def pid(self, name: str) -> int:
        with self.lock:
            return self.mesh.processes[name].pid

    def restarts(self) -> dict[str, int]:
        with self.lock:
            return {name: state.restarts for name, state in self.supervisor.states.items()}

    def signal(self, name: str, sig: signal.Signals) -> None:
        with self.lock:
            self.mesh.processes[name].signal(sig)

    def hold(self, name: str) -> None:
        with self.lock:
            child = self.mesh.processes.pop(name)
            self.held[name] = child
        child.kill()

    def release(self, name: str) -> None:
        with self.lock:
            self.mesh.processes[name] = self.held.pop(name)

    def not_ready(self) -> list[str]:
        with self.lock:
            return [name for name, child in self.mesh.processes.items() if not (child.running() and child.ready)]

    def restart_by_hand(self, name: str) -> None:
        """What an operator would do with a process that did not come back: counted, never expected."""
        self.manual_restarts.append(name)
        with self.lock:
            child = self.mesh.processes[name]
            child.signal(signal.SIGCONT)
            child.kill()
            child.spawn()


@contextmanager
def chaos_mesh(env: dict[str, str] | None = None) -> Iterator[SupervisedMesh]:
    """A supervised mesh with its own embedded Postgres in a temporary folder, removed on exit."""
    from meshctl.postgres import stop_embedded_postgres

    base = Path(tempfile.mkdtemp(prefix="agentmesh-chaos-"))
    extra_env = {**CHAOS_ENV, **ISOLATION_ENV, **(env or {})}
    mesh = Mesh(base / "data", base / "logs", ephemeral_ports=True, extra_env=extra_env)
    supervised = SupervisedMesh(mesh)
    try:
        mesh.start()
        supervised.start()
        yield supervised
    finally:
        supervised.close()
        for child in supervised.held.values():
            child.kill()
        with contextlib.suppress(Exception):
            signal_all(postgres_pids(supervised.pgdata), signal.SIGCONT)
        for child in mesh.processes.values():
            child.signal(signal.SIGCONT)
        mesh.stop()
        with contextlib.suppress(Exception):
            stop_embedded_postgres(mesh.data_dir)
        if os.environ.get("CHAOS_KEEP_LOGS", "") not in ("", "0"):
            chaos_log(f"logs kept in {mesh.log_dir}")
        else:
            shutil.rmtree(base, ignore_errors=True)
