"""`python -m bench` (`make bench`): the mesh's own costs against the offline LLM.

Starts a mesh of its own (ephemeral ports, temporary data, APP_ENV=test, BCRYPT_ROUNDS=4,
rate limits off), measures, stops it, prints a table and writes `bench/results/latest.json`
plus a timestamped copy. BENCH_QUICK=1 is a one-minute smoke run. Every added cost is a
difference from a baseline measured in the same run.

Order: with a zero-latency LLM — token verification, gateway GetMe, turn throughput,
memory search; then the LLM restarted at OVERHEAD_TTFT_MS / OVERHEAD_TOKENS_PER_S for the
time-to-first-token and turn-latency overhead.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from bench.clients import register_user
from bench.cpu import mesh_pids
from bench.gateway_costs import get_me_latency, get_me_throughput, token_verify_costs
from bench.memory_search import MemoryBench
from bench.mesh_run import bench_mesh, has_service, set_llm_latency
from bench.results import RESULTS_DIR, render_table, write_results
from bench.runs import reconnect_latency
from bench.turns import mesh_overhead, turn_throughput
from meshctl.mesh import Mesh

OVERHEAD_TTFT_MS = 300.0
OVERHEAD_TOKENS_PER_S = 50.0
OVERHEAD_CONCURRENCY = 10


@dataclass(frozen=True)
class Plan:
    quick: bool
    overhead_turns: int
    throughput_levels: tuple[int, ...]
    throughput_s: float
    memory_sizes: tuple[int, ...]
    memory_queries: int
    token_calls: int
    get_me_calls: int
    get_me_throughput_s: float
    reconnects: int

    @classmethod
    def from_env(cls) -> Plan:
        if os.environ.get("BENCH_QUICK", "") not in ("", "0"):
            return cls(True, 40, (1, 16, 64), 3.0, (10_000,), 50, 2_000, 100, 3.0, 20)
        return cls(False, 200, (1, 16, 64), 12.0, (10_000, 100_000), 200, 20_000, 1_000, 10.0, 100)


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run(mesh: Mesh, plan: Plan) -> dict[str, Any]:
    # Other work on the machine shows here: these figures are only comparable at a similar load.
    details: dict[str, Any] = {"notes": [], "plan": plan.__dict__, "loadavg_1m_start": os.getloadavg()[0]}
    notes: list[str] = details["notes"]
    has_agent = has_service(mesh, "agent")
    has_gateway = has_service(mesh, "gateway") and bool(mesh.gateway_url)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    channels = {name: grpc.aio.insecure_channel(mesh.addr(name)) for name in ("auth", "sessions", "agent")}
    gateway = httpx.AsyncClient(base_url=mesh.gateway_url, limits=limits) if has_gateway else None
    llm = httpx.AsyncClient(base_url=mesh.llm_url, limits=limits)
    try:
        user = await register_user(channels["auth"], "bench-auth")
        _log("token verification")
        details["token_verify"] = await token_verify_costs(channels["auth"], user, calls=plan.token_calls)
        if gateway is not None:
            _log("gateway GetMe latency and throughput")
            details["gateway"] = {
                "latency": await get_me_latency(gateway, channels["auth"], user, calls=plan.get_me_calls),
                "throughput": await get_me_throughput(
                    gateway,
                    channels["auth"],
                    user,
                    concurrency=64,
                    duration_s=plan.get_me_throughput_s,
                    pids={name: mesh.processes[name].pid for name in ("gateway", "auth")},
                ),
            }
        else:
            notes.append("gateway not in this checkout: gateway figures not measured")
        if has_agent:
            _log(f"turn throughput at {plan.throughput_levels} with a zero-latency LLM")
            details["throughput"] = await turn_throughput(
                channels,
                gateway,
                levels=list(plan.throughput_levels),
                duration_s=plan.throughput_s,
                agent_metrics_addr=mesh.processes["agent"].metrics_addr,
                pids=mesh_pids(mesh),
            )
            _log("reconnect to a running run: time to the first replayed event")
            details["runs"] = await reconnect_latency(
                channels, agent_addr=mesh.addr("agent"), reconnects=plan.reconnects
            )
        else:
            notes.append("agent not in this checkout: turn figures not measured")
        details["memory"] = {}
        bench = MemoryBench(mesh.env["DATABASE_URL"])
        await bench.open()
        try:
            for size in plan.memory_sizes:
                _log(f"memory search at {size} memories")
                result = await bench.measure(size, plan.memory_queries)
                details["memory"][f"{size // 1000}k"] = result.as_json()
        finally:
            await bench.close()
        if has_agent:
            _log(f"overhead: LLM at {OVERHEAD_TTFT_MS:g} ms TTFT, {OVERHEAD_TOKENS_PER_S:g} tokens/s")
            await asyncio.to_thread(set_llm_latency, mesh, ttft_ms=OVERHEAD_TTFT_MS, tokens_per_s=OVERHEAD_TOKENS_PER_S)
            details["overhead"] = {
                "llm_ttft_ms_setting": OVERHEAD_TTFT_MS,
                "llm_tokens_per_s_setting": OVERHEAD_TOKENS_PER_S,
                **await mesh_overhead(
                    channels, gateway, llm, turns=plan.overhead_turns, concurrency=OVERHEAD_CONCURRENCY
                ),
            }
    finally:
        for channel in channels.values():
            await channel.close()
        if gateway is not None:
            await gateway.aclose()
        await llm.aclose()
    details["loadavg_1m_end"] = os.getloadavg()[0]
    return details


def main() -> int:
    plan = Plan.from_env()
    started = time.perf_counter()
    _log(f"starting a bench mesh ({'quick' if plan.quick else 'full'} run)")
    with bench_mesh() as mesh:
        details = asyncio.run(run(mesh, plan))
    details["wall_seconds"] = round(time.perf_counter() - started, 1)
    directory = Path(os.environ["BENCH_RESULTS_DIR"]) if os.environ.get("BENCH_RESULTS_DIR") else RESULTS_DIR
    document = write_results(details, quick=plan.quick, directory=directory)
    print(render_table(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
