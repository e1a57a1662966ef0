"""`python -m meshctl run`: the whole mesh on the embedded defaults (what `make run` does).

Starts the embedded Postgres, the offline LLM when no LLM is configured, every service
and the gateway; waits for each to report ready; prints where each listens; on Ctrl-C
or SIGTERM stops everything in reverse order and leaves no process behind. Data lives
under `.data/` and survives restarts.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from meshctl.mesh import Mesh, StartError
from meshctl.processes import ROOT


def run(data_dir: Path, *, ephemeral_ports: bool) -> int:
    mesh = Mesh(data_dir=data_dir, log_dir=data_dir / "logs", ephemeral_ports=ephemeral_ports)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        mesh.start()
    except StartError as exc:
        print(f"start-up failed: {exc}", file=sys.stderr)
        mesh.stop()
        return 1
    print("\nagentmesh is running (Ctrl-C stops it):")
    if mesh.llm_url:
        print(f"  {'offline LLM':<12} {mesh.llm_url}   (an offline model, not a real one)")
    for name, child in mesh.processes.items():
        if child.addr:
            print(f"  {name:<12} grpc {child.addr:<22} metrics http://{child.metrics_addr}/metrics")
    if mesh.gateway_url:
        print(f"  {'gateway':<12} {mesh.gateway_url}  (chat page /, API docs /docs, /openapi.json)")
    print(f"  logs in {mesh.log_dir}\n", flush=True)
    while not stop.wait(1.0):
        dead = [name for name, child in mesh.processes.items() if not child.running()]
        if dead:
            print(f"stopped unexpectedly: {', '.join(dead)}; see {mesh.log_dir}", file=sys.stderr)
            break
    print("stopping...", flush=True)
    mesh.stop()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m meshctl", description=__doc__)
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    parser.add_argument("--ephemeral-ports", action="store_true", help="free ports instead of the defaults")
    args = parser.parse_args()
    sys.exit(run(args.data_dir, ephemeral_ports=args.ephemeral_ports))


if __name__ == "__main__":
    main()
