"""What authentication and the HTTP gateway cost per request.

Token verification: `AccessTokenVerifier.verify` on a real token from the auth service,
first verification (signature check; keys already fetched) and cached, in microseconds per call.
Gateway: GetMe through the gateway (HTTP/JSON -> gRPC) against the same RPC called
directly over gRPC, sequential calls interleaved so both see the same machine; then
requests/s at 64 concurrent clients through each.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import grpc
import httpx

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from bench.clients import BenchUser
from bench.cpu import cpu_ms_per_unit, cpu_seconds
from bench.stats import percentile, summary_ms
from runtime.settings import CommonSettings
from runtime.tokens import AccessTokenVerifier, JwksKeySource


async def token_verify_costs(auth_channel: grpc.aio.Channel, user: BenchUser, *, calls: int) -> dict[str, Any]:
    defaults = CommonSettings()
    keys = JwksKeySource(auth_channel, ttl_s=3600, refetch_min_interval_s=0)

    def verifier() -> AccessTokenVerifier:
        return AccessTokenVerifier(
            keys, issuer=defaults.jwt_issuer, audience=defaults.jwt_audience, algorithm=defaults.jwt_algorithm
        )

    await verifier().verify(user.access_token)  # fetches the JWKS once
    first_s: list[float] = []
    for _ in range(max(50, calls // 10)):
        fresh = verifier()
        started = time.perf_counter()
        await fresh.verify(user.access_token)
        first_s.append(time.perf_counter() - started)
    cached = verifier()
    await cached.verify(user.access_token)
    cached_s: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        await cached.verify(user.access_token)
        cached_s.append(time.perf_counter() - started)
    return {
        "algorithm": defaults.jwt_algorithm,
        "first_us_p50": round(percentile(first_s, 50) * 1e6, 2),
        "first_us_p99": round(percentile(first_s, 99) * 1e6, 2),
        "cached_us_p50": round(percentile(cached_s, 50) * 1e6, 2),
        "cached_us_p99": round(percentile(cached_s, 99) * 1e6, 2),
        "calls_first": len(first_s),
        "calls_cached": len(cached_s),
    }


async def _grpc_get_me(stub: auth_pb2_grpc.AuthServiceStub, user: BenchUser) -> bool:
    try:
        await stub.GetMe(auth_pb2.GetMeRequest(), metadata=user.metadata, timeout=10)
    except grpc.aio.AioRpcError:
        return False
    return True


async def _gateway_get_me(client: httpx.AsyncClient, user: BenchUser) -> bool:
    try:
        response = await client.get("/v1/auth/me", headers=user.headers, timeout=10)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def get_me_latency(
    client: httpx.AsyncClient, auth_channel: grpc.aio.Channel, user: BenchUser, *, calls: int
) -> dict[str, Any]:
    stub = auth_pb2_grpc.AuthServiceStub(auth_channel)
    for _ in range(20):
        await _grpc_get_me(stub, user)
        await _gateway_get_me(client, user)
    direct_s: list[float] = []
    gateway_s: list[float] = []
    failures = 0
    for _ in range(calls):
        started = time.perf_counter()
        failures += not await _grpc_get_me(stub, user)
        middle = time.perf_counter()
        failures += not await _gateway_get_me(client, user)
        ended = time.perf_counter()
        direct_s.append(middle - started)
        gateway_s.append(ended - middle)
    direct = summary_ms(direct_s)
    through = summary_ms(gateway_s)
    return {
        "direct_grpc_ms": direct,
        "gateway_ms": through,
        "added_ms_p50": round(float(through["p50"]) - float(direct["p50"]), 3),
        "added_ms_p99": round(float(through["p99"]) - float(direct["p99"]), 3),
        "failures": failures,
    }


async def _closed_loop(
    call: Any, concurrency: int, duration_s: float, pids: dict[str, int] | None = None
) -> dict[str, Any]:
    pids = {**(pids or {}), "bench-client": os.getpid()}
    cpu_before = cpu_seconds(pids)
    deadline = time.perf_counter() + duration_s
    ok = 0
    failed = 0

    async def worker() -> None:
        nonlocal ok, failed
        while time.perf_counter() < deadline:
            if await call():
                ok += 1
            else:
                failed += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    # CPU time each process spent per successful request: where the capacity goes.
    cpu_ms = cpu_ms_per_unit(cpu_before, cpu_seconds(pids), ok)
    return {
        "requests_per_s": round(ok / elapsed, 1),
        "ok": ok,
        "failed": failed,
        "seconds": round(elapsed, 2),
        "cpu_ms_per_request": cpu_ms,
    }


async def get_me_throughput(
    client: httpx.AsyncClient,
    auth_channel: grpc.aio.Channel,
    user: BenchUser,
    *,
    concurrency: int,
    duration_s: float,
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    stub = auth_pb2_grpc.AuthServiceStub(auth_channel)
    direct = await _closed_loop(lambda: _grpc_get_me(stub, user), concurrency, duration_s, pids)
    through = await _closed_loop(lambda: _gateway_get_me(client, user), concurrency, duration_s, pids)
    return {
        "concurrency": concurrency,
        "direct_grpc": direct,
        "gateway": through,
        "gateway_to_direct_ratio": round(through["requests_per_s"] / direct["requests_per_s"], 3)
        if direct["requests_per_s"]
        else None,
    }
