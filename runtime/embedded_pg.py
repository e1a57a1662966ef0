"""The embedded PostgreSQL (with pgvector) used when DATABASE_URL is unset.

`pgserver` runs one postmaster per data folder on a unix socket and reference-counts
the processes using it, so every service of a local mesh shares one server and the
last one to exit stops it. Data lives under `.data/pgdata` and survives restarts.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

# pgserver gives pg_ctl 10 s to start the server; on a loaded machine the server may still
# be coming up when that expires, and the next attempt finds it running.
START_ATTEMPTS = 4

_lock = threading.Lock()
_servers: dict[Path, PostgresServer] = {}


def embedded_database_url(data_dir: Path) -> str:
    """Starts (or joins) the embedded server; blocking, so call it off the event loop."""
    pgdata = (data_dir / "pgdata").resolve()
    with _lock:
        server = _servers.get(pgdata)
        if server is None:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            server = _servers[pgdata] = _start(pgdata)
        return server.get_uri()


def _start(pgdata: Path) -> PostgresServer:
    from pgserver.postgres_server import get_server  # imported lazily: production images never start it

    for _ in range(START_ATTEMPTS - 1):
        try:
            return get_server(pgdata, cleanup_mode="stop")
        except subprocess.TimeoutExpired:
            continue
    return get_server(pgdata, cleanup_mode="stop")


def release_embedded_database(data_dir: Path) -> None:
    """Gives up this process's handle on the data folder's server, which stops it when no other
    process holds one (at exit pgserver would do the same, but a process that starts and stops
    several meshes, or ends abruptly, left servers running)."""
    pgdata = (data_dir / "pgdata").resolve()
    with _lock:
        server = _servers.pop(pgdata, None)
    if server is not None:
        server.cleanup()
