"""One child process of the local mesh: started, waited for, stopped.

A service prints one line when it is ready (`AGENTMESH_READY service=... grpc=HOST:PORT
metrics=HOST:PORT`); everything else it writes goes to its log file.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

READY_LINE = re.compile(r"AGENTMESH_READY service=(?P<service>\S+) grpc=(?P<grpc>\S+) metrics=(?P<metrics>\S+)")
ROOT = Path(__file__).resolve().parent.parent


PORT_TAKEN_SIGNS = ("failed to bind to address", "address already in use", "[errno 98]")


class StartError(RuntimeError):
    pass


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: the kernel sends it SIGTERM when the launcher
    dies, however it dies (SIGKILL, a closed terminal), so no service outlives `make run`
    holding its port. Only for children started from the main thread: the signal fires when
    the forking *thread* exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class ChildProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_pattern: re.Pattern[str] = READY_LINE
    process: subprocess.Popen[str] | None = None
    ready_match: dict[str, str] = field(default_factory=dict)
    die_with_parent: bool = False
    _ready: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def addr(self) -> str:
        return self.ready_match.get("grpc", "")

    @property
    def metrics_addr(self) -> str:
        return self.ready_match.get("metrics", "")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 60.0, *, bind_retries: int = 3) -> ChildProcess:
        # A free port picked up front can be taken before the process binds it: an outgoing
        # connection may get the same number from the kernel's ephemeral range. That clash
        # passes within moments, so the start is tried again; a real listener keeps failing.
        for attempt in range(bind_retries + 1):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self.spawn()
            try:
                return self.wait_ready(timeout_s)
            except StartError:
                if attempt == bind_retries or not self._port_was_taken(offset):
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def _port_was_taken(self, offset: int) -> bool:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", "replace").lower()
        except OSError:
            return False
        return any(sign in text for sign in PORT_TAKEN_SIGNS)

    def spawn(self) -> None:
        """Starts the process without waiting for it to be ready (the supervisor restarts
        this way, so one slow restart does not hold up watching the others)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("a", encoding="utf-8")
        self._ready = threading.Event()
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C in the terminal reaches only the launcher
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        # This run's pipe and event: a restart replaces self.process and self._ready.
        threading.Thread(target=self._pump_stdout, args=(self.process.stdout, log, self._ready), daemon=True).start()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout_s: float = 60.0) -> ChildProcess:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.05):
            if self.process.poll() is not None:
                raise StartError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.kill()
                raise StartError(f"{self.name} was not ready within {timeout_s:.0f}s; see {self.log_path}")
        return self

    def _pump_stdout(self, stdout: IO[str], log: IO[str], ready: threading.Event) -> None:
        for line in stdout:
            if not ready.is_set():
                match = self.ready_pattern.search(line)
                if match:
                    self.ready_match = match.groupdict()
                    ready.set()
            log.write(line)
            log.flush()
        log.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, sig: int) -> None:
        if self.running():
            assert self.process is not None
            os.kill(self.process.pid, sig)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait for the drain, then SIGKILL if it overstays."""
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
