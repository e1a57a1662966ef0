"""`python -m meshctl run`: the whole mesh on the embedded defaults (what `make run` does).

Starts the embedded Postgres, the offline LLM when no LLM is configured, every service
and the gateway; waits for each to report ready; prints where each listens and which
database it uses. While it runs it supervises: a process that dies is restarted on its own
ports with backoff and the others keep serving. Ctrl-C (or SIGTERM, SIGHUP) stops
everything in reverse order, the embedded Postgres last, and leaves no process behind; a
second Ctrl-C kills what is still draining. Data lives under `.data/` and survives restarts.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

from meshctl.mesh import Mesh, StartError
from meshctl.ports import describe_clashes, find_clashes
from meshctl.postgres import stop_embedded_postgres
from meshctl.processes import ROOT
from meshctl.supervisor import Supervisor
from runtime.registry import start_order

# pgserver computes its lock directory with platformdirs when imported, which warns on
# every start where XDG_RUNTIME_DIR is unset (any non-login shell, containers, CI) and
# falls back to /tmp/runtime-<uid>: harmless here, and noise on the console.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

TICK_S = 0.2
# Longer than a service's own SHUTDOWN_GRACE_S (20 s by default): past it the process is killed.
DRAIN_TIMEOUT_S = 30.0


class Interrupted(Exception):
    """A stop signal arrived while the mesh was still starting."""


class Signals:
    """First SIGINT/SIGTERM/SIGHUP: stop gracefully. Any further one: kill what is left.

    The handlers only set flags (and, during start-up, raise to abandon the start): no lock
    is taken in a handler, since a handler interrupting the main thread inside the same lock
    would deadlock it."""

    def __init__(self) -> None:
        self.count = 0
        self.starting = True
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.count += 1
        if self.starting and self.count == 1:
            raise Interrupted(signal.Signals(signum).name)

    @property
    def stop(self) -> bool:
        return self.count > 0

    @property
    def force(self) -> bool:
        return self.count > 1


def database_lines(mesh: Mesh) -> list[str]:
    """Where the data is: the URL and a psql command line that opens it."""
    url = mesh.env["DATABASE_URL"]
    if mesh.embedded_postgres:
        import pgserver

        psql = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
        try:
            psql_shown = str(psql.relative_to(ROOT))
        except ValueError:
            psql_shown = str(psql)
        where = f"embedded PostgreSQL + pgvector, data in {mesh.data_dir / 'pgdata'}"
        # Under root pgserver runs Postgres as the `pgserver` user; the socket lets root in as `postgres`.
        return [f"  {'database':<12} {url}", f"  {'':<12} ({where})", f"  {'psql':<12} {psql_shown} {shlex.quote(url)}"]
    parts = urlsplit(url)
    shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url
    return [f"  {'database':<12} {shown}   (DATABASE_URL)", f'  {"psql":<12} psql "$DATABASE_URL"']


def print_banner(mesh: Mesh) -> None:
    print("\nagentmesh is running (Ctrl-C stops it):")
    if mesh.llm_url:
        print(f"  {'offline LLM':<12} {mesh.llm_url}   (an offline model, not a real one)")
    for name, child in mesh.processes.items():
        if child.addr:
            print(f"  {name:<12} grpc {child.addr:<22} metrics http://{child.metrics_addr}/metrics")
    if mesh.gateway_url:
        print(f"  {'gateway':<12} {mesh.gateway_url}  (chat page /, API docs /docs, /openapi.json)")
    for line in database_lines(mesh):
        print(line)
    print(f"  logs in {mesh.log_dir}\n", flush=True)


def stop_order(names: list[str]) -> list[list[str]]:
    """Who stops together: the gateway first (no new requests), then the agent (its turns finish
    while the services they call are still up), then everything else at once (each drains in a
    few seconds, so one after the other took 15 s)."""
    gateway = [name for name in names if name.startswith("gateway")]
    agent = [name for name in names if name.startswith("agent")]
    rest = [name for name in reversed(names) if name not in gateway and name not in agent]
    return [tier for tier in (gateway, agent, rest) if tier]


def shut_down(mesh: Mesh, signals: Signals) -> None:
    """Every process drained (SIGTERM) in stop_order(); a second signal kills the rest."""
    if not mesh.processes and not mesh.embedded_postgres:
        return  # nothing was started (a port clash is reported before anything starts)
    print("stopping...", flush=True)
    signals.starting = False
    for tier in stop_order(list(mesh.processes)):
        children = {name: mesh.processes[name] for name in tier}
        for child in children.values():
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while any(c.running() for c in children.values()) and not signals.force and time.monotonic() < deadline:
            time.sleep(0.05)
        for name, child in children.items():
            if child.running():
                print(f"  {name} killed", flush=True)
                child.kill()
            elif child.process is not None:
                child.process.wait()
    mesh.processes.clear()
    if mesh.embedded_postgres:
        try:
            print(f"  {stop_embedded_postgres(mesh.data_dir)}", flush=True)
        except Exception as exc:  # still exit, and say how to stop it by hand
            print(f"  could not stop the embedded Postgres ({exc}); pg_ctl stop -D {mesh.data_dir / 'pgdata'}")
    print("stopped.", flush=True)


def run(data_dir: Path, *, ephemeral_ports: bool) -> int:
    signals = Signals()
    mesh = Mesh(data_dir=data_dir, log_dir=data_dir / "logs", ephemeral_ports=ephemeral_ports, die_with_parent=True)
    try:
        try:
            # Checked before the database starts, so a clash is reported alone with nothing to undo.
            mesh.plan(database=False)
            clashes = find_clashes(mesh.planned_ports())
            if clashes:
                print(f"start-up failed: {describe_clashes(clashes)}", file=sys.stderr, flush=True)
                return 1
            mesh.plan_database()
            mesh.start(planned=True)
            signals.starting = False
        except StartError as exc:
            print(f"start-up failed: {exc}", file=sys.stderr, flush=True)
            return 1
        except Interrupted:
            return 0
        print_banner(mesh)
        supervisor = Supervisor(mesh.processes, lambda line: print(line, file=sys.stderr, flush=True))
        while not signals.stop:
            supervisor.tick()
            time.sleep(TICK_S)
        return 0
    finally:
        shut_down(mesh, signals)


def main() -> None:
    default_ports = ", ".join(str(port) for port in sorted(entry.port for entry in start_order()))
    parser = argparse.ArgumentParser(prog="python -m meshctl", description=__doc__)
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    parser.add_argument(
        "--ephemeral-ports",
        action="store_true",
        help=f"listen on free ports instead of the defaults ({default_ports}, ...): beside another mesh",
    )
    args = parser.parse_args()
    sys.exit(run(args.data_dir, ephemeral_ports=args.ephemeral_ports))


if __name__ == "__main__":
    main()
