"""The embedded PostgreSQL (with pgvector) used when DATABASE_URL is unset.

`pgserver` runs one postmaster per data folder on a unix socket and reference-counts
the processes using it, so every service of a local mesh shares one server and the
last one to exit stops it. Data lives under `.data/pgdata` and survives restarts.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

# pgserver gives pg_ctl 10 s to start the server; on a loaded machine the server may still
# be coming up when that expires, and the next attempt finds it running.
START_ATTEMPTS = 4

_lock = threading.Lock()
_servers: dict[Path, object] = {}


def embedded_database_url(data_dir: Path) -> str:
    """Starts (or joins) the embedded server; blocking, so call it off the event loop."""
    import pgserver  # imported lazily: production images never start it

    pgdata = (data_dir / "pgdata").resolve()
    with _lock:
        server = _servers.get(pgdata)
        if server is None:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            for attempt in range(START_ATTEMPTS):
                try:
                    server = pgserver.get_server(pgdata, cleanup_mode="stop")
                    break
                except subprocess.TimeoutExpired:
                    if attempt == START_ATTEMPTS - 1:
                        raise
            _servers[pgdata] = server
        return server.get_uri()  # type: ignore[attr-defined]
