"""Auth figures: logins per second at the production bcrypt cost, and GetMe RPCs per
second with 32 concurrent callers (token verification included).

`python -m bench.auth_throughput` starts the auth service alone (BCRYPT_ROUNDS from the
environment, default 12), measures, prints, and writes `bench/results/auth-latest.json`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from meshctl.mesh import Mesh

ROUNDS = os.environ.get("BCRYPT_ROUNDS", "12")
LOGINS = 24
LOGIN_CONCURRENCY = 4
GETME_CALLERS = 32
GETME_SECONDS = 10.0
PASSWORD = "Bench-auth-1!"


async def measure(addr: str) -> dict[str, object]:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        email = f"bench-{time.time_ns()}@example.com"
        registered = await stub.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD))
        metadata = (("authorization", f"Bearer {registered.tokens.access_token}"),)

        async def login_worker(count: int) -> None:
            for _ in range(count):
                await stub.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))

        started = time.perf_counter()
        await asyncio.gather(*(login_worker(LOGINS // LOGIN_CONCURRENCY) for _ in range(LOGIN_CONCURRENCY)))
        logins_per_s = LOGINS / (time.perf_counter() - started)

        latencies: list[float] = []
        deadline = time.perf_counter() + GETME_SECONDS

        async def getme_worker() -> None:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                await stub.GetMe(auth_pb2.GetMeRequest(), metadata=metadata)
                latencies.append(time.perf_counter() - began)

        await warm_up(stub, metadata)
        started = time.perf_counter()
        await asyncio.gather(*(getme_worker() for _ in range(GETME_CALLERS)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "bcrypt_rounds": int(ROUNDS),
        "logins_per_s": round(logins_per_s, 2),
        "login_concurrency": LOGIN_CONCURRENCY,
        "getme_callers": GETME_CALLERS,
        "getme_per_s": round(len(latencies) / elapsed, 1),
        "getme_ms_p50": round(statistics.median(latencies) * 1000, 3),
        "getme_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
        "cpu_count": os.cpu_count(),
    }


async def warm_up(stub: auth_pb2_grpc.AuthServiceStub, metadata: tuple[tuple[str, str], ...]) -> None:
    for _ in range(200):
        await stub.GetMe(auth_pb2.GetMeRequest(), metadata=metadata)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agentmesh-auth-bench-") as tmp:
        mesh = Mesh(
            data_dir=Path(tmp) / "data",
            log_dir=Path(tmp) / "logs",
            ephemeral_ports=True,
            extra_env={"APP_ENV": "test", "BCRYPT_ROUNDS": ROUNDS, "LOG_LEVEL": "WARNING"},
        )
        try:
            mesh.start(["auth"])
            result = asyncio.run(measure(mesh.addr("auth")))
        finally:
            mesh.stop()
    out = Path(__file__).parent / "results" / "auth-latest.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"logins/s at bcrypt cost {result['bcrypt_rounds']} ({LOGIN_CONCURRENCY} concurrent):"
        f" {result['logins_per_s']}\n"
        f"GetMe/s with {GETME_CALLERS} concurrent callers: {result['getme_per_s']}"
        f" (p50 {result['getme_ms_p50']} ms, p99 {result['getme_ms_p99']} ms)  -> {out}"
    )


if __name__ == "__main__":
    main()
