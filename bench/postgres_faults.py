"""Postgres faults for the chaos suite and the database-outage tests: the embedded server
frozen (SIGSTOP on it and its children) or restarted with every connection dropped."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _parent_pid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def postgres_pids(pgdata: Path) -> list[int]:
    """The postmaster of `pgdata` (from its postmaster.pid) and every process it forked
    (backends, checkpointer, io workers): what a frozen database server is."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = [
        int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _parent_pid(int(entry)) == postmaster
    ]
    return [postmaster, *children]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a backend that ended meanwhile
            os.kill(pid, sig)


@contextmanager
def postgres_frozen(pgdata: Path) -> Iterator[list[int]]:
    """SIGSTOP on the server and its children for the block, SIGCONT after, whatever happens.
    Backends forked while frozen cannot exist (the postmaster forks them), so one list does."""
    pids = postgres_pids(pgdata)
    signal_all(pids, signal.SIGSTOP)
    try:
        yield pids
    finally:
        signal_all(pids, signal.SIGCONT)


def restart_postgres(pgdata: Path) -> float:
    """`pg_ctl restart -m fast` (every connection dropped); returns the seconds it took."""
    from pgserver._commands import pg_ctl

    started = time.monotonic()
    user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs it as this user under root
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=user)
    return time.monotonic() - started
