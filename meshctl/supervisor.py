"""Keeps a local mesh running: a process that dies is restarted on its own ports, with
exponential backoff, while the others keep serving; every restart is reported.

Called from the launcher's main thread (`tick()` a few times a second), never blocking: a
restart is spawned and its readiness noticed on a later tick, so one slow restart does not
stop the others being watched, and Ctrl-C is handled at once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from meshctl.processes import ChildProcess

INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# A process that has served this long since its last restart is healthy again: the next
# crash starts over at the initial backoff.
STABLE_AFTER_S = 60.0
# A restarted process that has not printed its ready line by then is killed and retried.
READY_TIMEOUT_S = 120.0


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


@dataclass
class _State:
    restarts: int = 0
    backoff_s: float = INITIAL_BACKOFF_S
    restart_at: float | None = None  # when a dead process is due to be spawned again
    spawned_at: float | None = None  # a restart that has not reported ready yet
    ready_at: float = 0.0


class Supervisor:
    def __init__(
        self,
        processes: dict[str, ChildProcess],
        report: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        initial_backoff_s: float = INITIAL_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        stable_after_s: float = STABLE_AFTER_S,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.processes = processes
        self.report = report
        self.clock = clock
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.ready_timeout_s = ready_timeout_s
        now = clock()
        self.states = {name: _State(backoff_s=initial_backoff_s, ready_at=now) for name in processes}

    def tick(self) -> None:
        now = self.clock()
        for name, child in self.processes.items():
            state = self.states.setdefault(name, _State(backoff_s=self.initial_backoff_s, ready_at=now))
            if state.restart_at is not None:
                if now >= state.restart_at:
                    state.restart_at = None
                    state.spawned_at = now
                    child.spawn()
                    self.report(f"{name}: restarting (restart {state.restarts}, pid {child.pid})")
                continue
            if child.running():
                self._watch_running(name, child, state, now)
                continue
            self._schedule_restart(name, child, state, now)

    def _watch_running(self, name: str, child: ChildProcess, state: _State, now: float) -> None:
        if state.spawned_at is not None:
            if child.ready:
                self.report(f"{name}: back, serving again after {now - state.spawned_at:.1f}s (pid {child.pid})")
                state.spawned_at = None
                state.ready_at = now
            elif now - state.spawned_at > self.ready_timeout_s:
                self.report(f"{name}: not ready {self.ready_timeout_s:.0f}s after restarting; killing it")
                child.kill()
        elif now - state.ready_at >= self.stable_after_s:
            state.backoff_s = self.initial_backoff_s

    def _schedule_restart(self, name: str, child: ChildProcess, state: _State, now: float) -> None:
        delay = state.backoff_s
        state.backoff_s = min(state.backoff_s * 2, self.max_backoff_s)
        state.restarts += 1
        state.restart_at = now + delay
        pid = child.process.pid if child.process is not None else "?"
        self.report(
            f"{name} (pid {pid}) stopped unexpectedly ({describe_exit(child.returncode)}); "
            f"restarting in {delay:.0f}s; the others keep serving. Log: {child.log_path}"
        )
        state.spawned_at = None
