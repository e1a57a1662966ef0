"""One child process of the local mesh: started, waited for, stopped.

A service prints one line when it is ready (`AGENTMESH_READY service=... grpc=HOST:PORT
metrics=HOST:PORT`); everything else it writes goes to its log file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

READY_LINE = re.compile(r"AGENTMESH_READY service=(?P<service>\S+) grpc=(?P<grpc>\S+) metrics=(?P<metrics>\S+)")
ROOT = Path(__file__).resolve().parent.parent


class StartError(RuntimeError):
    pass


@dataclass
class ChildProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_pattern: re.Pattern[str] = READY_LINE
    process: subprocess.Popen[str] | None = None
    ready_match: dict[str, str] = field(default_factory=dict)

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

    def start(self, timeout_s: float = 60.0) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("a", encoding="utf-8")
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C in the terminal reaches only the launcher
        )
        ready = threading.Event()
        threading.Thread(target=self._pump_stdout, args=(log, ready), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.05):
            if self.process.poll() is not None:
                raise StartError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.kill()
                raise StartError(f"{self.name} was not ready within {timeout_s:.0f}s; see {self.log_path}")
        return self

    def _pump_stdout(self, log, ready: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if not ready.is_set():
                match = self.ready_pattern.search(line)
                if match:
                    self.ready_match = match.groupdict()
                    ready.set()
            log.write(line)
            log.flush()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
