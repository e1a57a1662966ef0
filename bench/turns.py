"""Chat turns: the mesh's added latency over the LLM's own, and turns per second.

Overhead: the same turns (same prompts, same concurrency) at the offline LLM directly
(streaming chat completion over HTTP), through the agent over gRPC (StreamChat) and through
the gateway (SSE), in interleaved rounds so the three paths share the machine's noise. The
difference of each percentile from the LLM's own is what the mesh adds.

Throughput: closed-loop workers, one user and session each (a new session every
SESSION_TURNS turns so history stays short), calling the agent's Chat for a fixed time with
a zero-latency LLM: each turn runs the real path (session check, run lock, memory search,
LLM, checkpoint, background memory write and trace).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from bench.agent_metrics import delta, scrape_counters
from bench.clients import (
    PROMPTS,
    BenchUser,
    TurnTiming,
    create_session,
    gateway_chat_turn,
    gateway_stream_turn,
    grpc_chat_turn,
    grpc_stream_turn,
    llm_stream_turn,
    register_user,
)
from bench.cpu import cpu_ms_per_unit, cpu_seconds, mesh_cpu_ms
from bench.stats import summary_ms

SESSION_TURNS = 10
LLM_MODEL = "offline-small"


@dataclass
class Worker:
    user: BenchUser
    session_id: str
    turns_in_session: int = 0


async def make_workers(channels: dict[str, grpc.aio.Channel], count: int, prefix: str) -> list[Worker]:
    users = await asyncio.gather(*(register_user(channels["auth"], prefix) for _ in range(count)))
    sessions = await asyncio.gather(*(create_session(channels["sessions"], user) for user in users))
    return [Worker(user, session) for user, session in zip(users, sessions, strict=True)]


async def _rotate(channel: grpc.aio.Channel, worker: Worker) -> None:
    worker.turns_in_session += 1
    if worker.turns_in_session >= SESSION_TURNS:
        worker.session_id = await create_session(channel, worker.user)
        worker.turns_in_session = 0


def _summarise(timings: list[TurnTiming]) -> dict[str, Any]:
    ok = [t for t in timings if t.ok]
    return {
        "turns": len(timings),
        "failed": len(timings) - len(ok),
        "errors": sorted({t.error for t in timings if not t.ok})[:5],
        "ttft_ms": summary_ms([t.ttft_s for t in ok]),
        "turn_ms": summary_ms([t.total_s for t in ok]),
        "tokens_mean": round(sum(t.tokens for t in ok) / len(ok), 1) if ok else 0,
    }


async def mesh_overhead(
    mesh_channels: dict[str, grpc.aio.Channel],
    gateway: httpx.AsyncClient | None,
    llm: httpx.AsyncClient,
    *,
    turns: int,
    concurrency: int,
) -> dict[str, Any]:
    workers = await make_workers(mesh_channels, concurrency, "overhead")
    agent = mesh_channels["agent"]
    timings: dict[str, list[TurnTiming]] = {"llm": [], "grpc": [], "gateway": []}

    async def one_round(path: str, count: int, record: bool) -> None:
        async def run(i: int) -> None:
            worker = workers[i % concurrency]
            prompt = PROMPTS[i % len(PROMPTS)]
            if path == "llm":
                result = await llm_stream_turn(llm, LLM_MODEL, prompt)
            elif path == "grpc":
                result = await grpc_stream_turn(agent, worker.user, worker.session_id, prompt)
            else:
                assert gateway is not None
                result = await gateway_stream_turn(gateway, worker.user, worker.session_id, prompt)
            if path != "llm":
                await _rotate(mesh_channels["sessions"], worker)
            if record:
                timings[path].append(result)

        # One turn per worker at a time: a session runs one turn at a time.
        for start in range(0, count, concurrency):
            await asyncio.gather(*(run(i) for i in range(start, min(count, start + concurrency))))

    paths = ["llm", "grpc"] + (["gateway"] if gateway is not None else [])
    for path in paths:
        await one_round(path, concurrency, record=False)  # warm-up
    per_round = concurrency * 2
    for _ in range(max(1, turns // per_round)):
        for path in paths:
            await one_round(path, per_round, record=True)
    result: dict[str, Any] = {"concurrency": concurrency, **{p: _summarise(timings[p]) for p in paths}}
    base = result["llm"]
    for path in paths[1:]:
        mine = result[path]
        result[f"{path}_added_ms"] = {
            f"{what}_{q}": round(float(mine[f"{what}_ms"][q]) - float(base[f"{what}_ms"][q]), 3)
            for what in ("ttft", "turn")
            for q in ("p50", "p95", "p99")
            if mine[f"{what}_ms"].get("n") and base[f"{what}_ms"].get("n")
        }
    return result


TurnCall = Callable[[Worker, str], Awaitable[TurnTiming]]
# Streams at once for the first-token-under-load cells (the seed's stress comparison used 10).
STREAM_CONCURRENCY = 10


async def closed_loop_turns(
    workers: list[Worker],
    call: TurnCall,
    sessions_channel: grpc.aio.Channel,
    duration_s: float,
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    cpu_before = cpu_seconds(pids or {})
    deadline = time.perf_counter() + duration_s
    timings: list[TurnTiming] = []

    async def loop(worker: Worker, offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            timings.append(await call(worker, PROMPTS[i % len(PROMPTS)]))
            i += 1
            await _rotate(sessions_channel, worker)

    started = time.perf_counter()
    await asyncio.gather(*(loop(w, i) for i, w in enumerate(workers)))
    elapsed = time.perf_counter() - started
    ok = [t for t in timings if t.ok]
    cpu = cpu_ms_per_unit(cpu_before, cpu_seconds(pids or {}), len(ok))
    return {
        "concurrency": len(workers),
        "seconds": round(elapsed, 2),
        "turns_ok": len(ok),
        "turns_failed": len(timings) - len(ok),
        "errors": sorted({t.error for t in timings if not t.ok})[:5],
        "turns_per_s": round(len(ok) / elapsed, 2),
        "turn_ms": summary_ms([t.total_s for t in ok]),
        # For a unary Chat the first token is the whole answer; for a stream, its first token.
        "ttft_ms": summary_ms([t.ttft_s for t in ok]),
        "cpu_ms_per_turn": cpu,
        "cpu_ms_per_turn_mesh": mesh_cpu_ms(cpu),
    }


async def turn_throughput(
    channels: dict[str, grpc.aio.Channel],
    gateway: httpx.AsyncClient | None,
    *,
    levels: list[int],
    duration_s: float,
    agent_metrics_addr: str = "",
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    workers = await make_workers(channels, max(levels), "throughput")
    agent = channels["agent"]

    async def via_grpc(worker: Worker, prompt: str) -> TurnTiming:
        return await grpc_chat_turn(agent, worker.user, worker.session_id, prompt)

    async def via_gateway(worker: Worker, prompt: str) -> TurnTiming:
        assert gateway is not None
        return await gateway_chat_turn(gateway, worker.user, worker.session_id, prompt)

    async def streamed_via_grpc(worker: Worker, prompt: str) -> TurnTiming:
        return await grpc_stream_turn(agent, worker.user, worker.session_id, prompt)

    async def streamed_via_gateway(worker: Worker, prompt: str) -> TurnTiming:
        assert gateway is not None
        return await gateway_stream_turn(gateway, worker.user, worker.session_id, prompt)

    await closed_loop_turns(workers[:4], via_grpc, channels["sessions"], min(3.0, duration_s))  # warm-up
    results: dict[str, Any] = {}

    async def measured(key: str, level: int, call: TurnCall) -> None:
        before = await scrape_counters(agent_metrics_addr)
        results[key] = await closed_loop_turns(workers[:level], call, channels["sessions"], duration_s, pids)
        # What the agent did during those turns: memory searched (hit/miss) or skipped
        # (timeout/error), memory writes done or dropped, traces sent.
        results[key]["agent_counters"] = delta(before, await scrape_counters(agent_metrics_addr))

    for level in levels:
        await measured(f"grpc_c{level}", level, via_grpc)
    if gateway is not None:
        await measured(f"gateway_c{max(levels)}", max(levels), via_gateway)
    # First tokens under load with a model that adds nothing: what the mesh alone makes them wait.
    await measured(f"grpc_stream_c{STREAM_CONCURRENCY}", STREAM_CONCURRENCY, streamed_via_grpc)
    if gateway is not None:
        await measured(f"gateway_stream_c{STREAM_CONCURRENCY}", STREAM_CONCURRENCY, streamed_via_gateway)
    return results
