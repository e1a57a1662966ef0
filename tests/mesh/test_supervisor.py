"""The supervisor's restart rule on a fake clock: exponential backoff up to a cap, reset after a
stable minute, a restart that never becomes ready is killed, every step reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from meshctl.supervisor import Supervisor


@dataclass
class FakeProcess:
    pid: int


@dataclass
class FakeChild:
    """What the supervisor uses of a ChildProcess: it dies and comes back when told."""

    pid: int = 100
    alive: bool = True
    ready: bool = True
    returncode: int | None = None
    log_path: Path = Path("/tmp/fake.log")
    spawns: list[int] = field(default_factory=list)

    @property
    def process(self) -> FakeProcess:
        return FakeProcess(self.pid)

    def running(self) -> bool:
        return self.alive

    def spawn(self) -> None:
        self.pid += 1
        self.alive, self.ready, self.returncode = True, False, None
        self.spawns.append(self.pid)

    def kill(self) -> None:
        self.alive, self.returncode = False, -9

    def die(self, code: int = -9) -> None:
        self.alive, self.returncode = False, code


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def supervisor(child: FakeChild, clock: Clock, lines: list[str]) -> Supervisor:
    return Supervisor(
        {"auth": child},  # type: ignore[dict-item]
        lines.append,
        clock=clock,
        initial_backoff_s=1,
        max_backoff_s=8,
        stable_after_s=60,
        ready_timeout_s=30,
    )


def crash_and_restart(sup: Supervisor, child: FakeChild, clock: Clock) -> float:
    """Kills the child, returns how long the supervisor waited before spawning it again."""
    child.die()
    sup.tick()
    died_at = clock.now
    spawns = len(child.spawns)
    while len(child.spawns) == spawns:
        clock.now += 0.25
        sup.tick()
    waited = clock.now - died_at
    child.ready = True
    sup.tick()
    return waited


def test_backoff_doubles_to_the_cap_and_resets_after_a_stable_minute() -> None:
    child, clock, lines = FakeChild(), Clock(), []
    sup = supervisor(child, clock, lines)
    sup.tick()
    assert lines == []
    waits = [crash_and_restart(sup, child, clock) for _ in range(5)]
    assert waits == [1, 2, 4, 8, 8]
    clock.now += 61  # a minute of service since it came back
    sup.tick()
    assert crash_and_restart(sup, child, clock) == 1


def test_each_death_and_return_is_reported() -> None:
    child, clock, lines = FakeChild(), Clock(), []
    sup = supervisor(child, clock, lines)
    crash_and_restart(sup, child, clock)
    assert lines[0].startswith("auth (pid 100) stopped unexpectedly (signal SIGKILL); restarting in 1s")
    assert lines[1] == "auth: restarting (restart 1, pid 101)"
    assert lines[2].startswith("auth: back, serving again after")
    child.die(3)
    sup.tick()
    assert "(exit code 3)" in lines[3]


def test_a_restart_that_never_becomes_ready_is_killed_and_retried() -> None:
    child, clock, lines = FakeChild(), Clock(), []
    sup = supervisor(child, clock, lines)
    child.die()
    sup.tick()
    clock.now += 1
    sup.tick()  # spawned, not ready
    assert child.alive and not child.ready
    clock.now += 31
    sup.tick()
    assert not child.alive, "a restart stuck before ready must be killed"
    assert "not ready 30s after restarting" in lines[-1]
    sup.tick()  # noticed dead: scheduled again, with the doubled backoff
    assert "restarting in 2s" in lines[-1]


def test_the_gateway_stops_first_then_the_agent_then_the_rest_together() -> None:
    from meshctl.__main__ import stop_order

    started = ["offline-llm", "auth", "sessions", "memory", "evals", "agent", "gateway"]
    assert stop_order(started) == [["gateway"], ["agent"], ["evals", "memory", "sessions", "auth", "offline-llm"]]
