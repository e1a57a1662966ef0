"""`make loadtest`: Locust headless for a bounded time against a running mesh, or against a
mesh this runner starts when nothing listens; CSV and HTML reports under loadtest/reports/;
exit 1 when an SLO in loadtest/slo.yaml is missed (checked by the locustfile on quit).

The mesh started here (ephemeral ports, temporary data) runs with LOADTEST_ENV: the offline
LLM at 300 ms to first token and 50 tokens/s (OFFLINE_LLM_TTFT_MS, OFFLINE_LLM_TOKENS_PER_S),
gateway rate limits raised (RATE_LIMIT_DEFAULT, _READ, _CHAT, _CHAT_STREAM, _MESSAGES, _LOGIN,
_REGISTER) so the load is not throttled, and BCRYPT_ROUNDS=4 so registering the users on the
fly does not dominate two cores. Against `make run` the mesh's own settings apply.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from meshctl.mesh import Mesh

ROOT = Path(__file__).resolve().parent.parent
REPORTS = Path(__file__).resolve().parent / "reports"
MAKE_RUN_GATEWAY = "http://127.0.0.1:8080"
HIGH_LIMIT = "1000000 per minute"
LOADTEST_ENV = {
    "OFFLINE_LLM_TTFT_MS": "300",
    "OFFLINE_LLM_TOKENS_PER_S": "50",
    "RATE_LIMIT_DEFAULT": HIGH_LIMIT,
    "RATE_LIMIT_READ": HIGH_LIMIT,
    "RATE_LIMIT_CHAT": HIGH_LIMIT,
    "RATE_LIMIT_CHAT_STREAM": HIGH_LIMIT,
    "RATE_LIMIT_MESSAGES": HIGH_LIMIT,
    "RATE_LIMIT_LOGIN": HIGH_LIMIT,
    "RATE_LIMIT_REGISTER": HIGH_LIMIT,
    "BCRYPT_ROUNDS": "4",
    "SHUTDOWN_GRACE_S": "5",
}


def gateway_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def locust_command(args: argparse.Namespace, host: str, grpc_addrs: dict[str, str], prefix: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtest" / "locustfile.py"),
        "--config",
        str(ROOT / "loadtest" / "locust.conf"),
        "--headless",
        "--host",
        host,
        "-u",
        str(args.users),
        "-r",
        str(args.spawn_rate),
        "-t",
        args.time,
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--only-summary",
        *(f"--{name}-addr={addr}" for name, addr in grpc_addrs.items()),
        *args.locust_args,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("LOADTEST_HOST", ""), help="gateway URL; empty: autodetect")
    parser.add_argument("--users", type=int, default=int(os.environ.get("LOADTEST_USERS", "20")))
    parser.add_argument("--spawn-rate", type=float, default=float(os.environ.get("LOADTEST_SPAWN_RATE", "5")))
    parser.add_argument("--time", default=os.environ.get("LOADTEST_TIME", "60s"))
    parser.add_argument("locust_args", nargs=argparse.REMAINDER, help="passed to locust (e.g. HttpChatUser)")
    args = parser.parse_args()

    REPORTS.mkdir(parents=True, exist_ok=True)
    prefix = REPORTS / time.strftime("loadtest-%Y%m%dT%H%M%S")
    mesh: Mesh | None = None
    base: Path | None = None
    host = args.host
    grpc_addrs = {
        name: os.environ.get(f"{name.upper()}_ADDR", f"127.0.0.1:{port}")
        for name, port in (("auth", 50051), ("sessions", 50052), ("agent", 50053))
    }
    if not host and gateway_up(MAKE_RUN_GATEWAY):
        host = MAKE_RUN_GATEWAY
        print(f"loadtest: using the running mesh at {host}", flush=True)
    if not host:
        base = Path(tempfile.mkdtemp(prefix="agentmesh-loadtest-"))
        mesh = Mesh(base / "data", base / "logs", ephemeral_ports=True, extra_env=LOADTEST_ENV)
        print("loadtest: nothing listens on :8080; starting a mesh (LLM 300 ms TTFT, 50 tokens/s)", flush=True)
        mesh.start()
        host = mesh.gateway_url
        grpc_addrs = {name: mesh.addr(name) for name in grpc_addrs}
    try:
        command = locust_command(args, host, grpc_addrs, prefix)
        print("loadtest:", " ".join(command[2:]), flush=True)
        code = subprocess.run(command, cwd=ROOT, check=False).returncode
    finally:
        if mesh is not None:
            mesh.stop()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
    print(f"loadtest: reports {prefix}_stats.csv, {prefix}.html; exit {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
