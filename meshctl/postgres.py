"""Stopping the embedded Postgres that `make run` started.

pgserver reference-counts the processes using a data folder in `pgdata/.handle_pids.json` and
stops the postmaster in the atexit hook of the last one. A pid left in that list by a process
that was SIGKILLed is never removed, so from then on no exit is ever "the last" and the server
runs forever. The launcher is the only handle a local mesh takes (its children get
DATABASE_URL), so on the way out it drops the dead pids and stops the postmaster itself with
`pg_ctl stop`, unless another live process still holds a handle.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def stop_embedded_postgres(data_dir: Path) -> str:
    """Stops the postmaster of `data_dir/pgdata`; returns what it did, for the console."""
    from pgserver._commands import pg_ctl  # lazily, as runtime.embedded_pg does
    from pgserver.postgres_server import PostgresServer

    from runtime import embedded_pg

    pgdata = (data_dir / "pgdata").resolve()
    if postmaster_pid(data_dir) is None:
        return "embedded Postgres was not running"
    handles_path = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        server = embedded_pg._servers.pop(pgdata, None)
        if server is not None:
            # Our own handle is released here; pgserver's atexit hook must not run it again.
            atexit.unregister(server._cleanup)  # type: ignore[attr-defined]
            PostgresServer._instances.pop(pgdata, None)
        try:
            handles = [int(pid) for pid in json.loads(handles_path.read_text())]
        except (OSError, ValueError):
            handles = []
        others = [pid for pid in handles if pid != os.getpid() and _alive(pid)]
        handles_path.write_text(json.dumps(others))
        if others:
            return f"embedded Postgres left running: still used by pid {', '.join(map(str, others))}"
        user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs it as this user under root
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return "embedded Postgres stopped"
