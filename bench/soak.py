"""`make soak` (`python -m bench.soak`): steady load for SOAK_MINUTES (default 10) on a mesh of
its own, with every process's resident memory, thread count, open file descriptors and open
connections sampled every SOAK_SAMPLE_S (default 60) seconds.

Load: SOAK_CONCURRENCY (default 8) closed-loop clients through the gateway, each alternating a
unary and a streamed chat in its own session (a new session every 10 turns), the offline LLM
at 300 ms to first token and 50 tokens/s. Each turn searches memory before and writes memory
and a trace after, the paths where the seed leaked a thread per memory call.

Leak rule, per process, for RSS and threads: take the samples after the first one (the first
minute is warm-up), split them in two halves; growth in the second half = last - middle,
in the first = middle - first. The metric "keeps growing" when the second-half growth is
above a tolerance (threads: 4; RSS: 16 MB or 5% of the starting RSS, whichever is larger) and
at least half the first-half growth — a line grows as much in each half, a curve that levels
off does not. Needs 4+ samples after warm-up; any process that keeps growing fails the run.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import psutil

from bench.clients import PROMPTS, gateway_chat_turn, gateway_stream_turn
from bench.mesh_run import bench_mesh
from bench.results import RESULTS_DIR, cpu_model, git_commit
from bench.turns import Worker, _rotate, make_workers
from meshctl.mesh import Mesh

THREAD_TOLERANCE = 4
RSS_TOLERANCE_BYTES = 16 * 1024 * 1024
RSS_TOLERANCE_RATIO = 0.05
METRICS = ("rss_mb", "threads", "fds", "connections")


@dataclass(frozen=True)
class Sample:
    minute: float
    process: str
    rss_mb: float
    threads: int
    fds: int
    connections: int
    turns: int


def sample_processes(mesh: Mesh, minute: float, turns: int) -> list[Sample]:
    samples = []
    for name, child in mesh.processes.items():
        if not child.running():
            continue
        try:
            proc = psutil.Process(child.pid)
            with proc.oneshot():
                samples.append(
                    Sample(
                        minute=round(minute, 2),
                        process=name,
                        rss_mb=round(proc.memory_info().rss / 2**20, 1),
                        threads=proc.num_threads(),
                        fds=proc.num_fds(),
                        connections=len(proc.net_connections(kind="inet")),
                        turns=turns,
                    )
                )
        except psutil.Error:
            continue
    return samples


def keeps_growing(values: list[float], tolerance: float) -> bool:
    if len(values) < 4:
        return False
    middle = values[len(values) // 2]
    first_half = middle - values[0]
    second_half = values[-1] - middle
    return second_half > tolerance and second_half >= 0.5 * first_half


def judge(samples: list[Sample]) -> tuple[list[str], bool]:
    """Sentences about every growing metric, and whether there were enough samples."""
    problems = []
    enough = True
    for process in sorted({s.process for s in samples}):
        series = [s for s in samples if s.process == process][1:]  # the first is warm-up
        if len(series) < 4:
            enough = False
            continue
        threads = [float(s.threads) for s in series]
        rss = [s.rss_mb for s in series]
        rss_tolerance = max(RSS_TOLERANCE_BYTES / 2**20, RSS_TOLERANCE_RATIO * rss[0])
        if keeps_growing(threads, THREAD_TOLERANCE):
            problems.append(f"{process}: threads keep growing {threads[0]:.0f} -> {threads[-1]:.0f}")
        if keeps_growing(rss, rss_tolerance):
            problems.append(f"{process}: RSS keeps growing {rss[0]:.0f} -> {rss[-1]:.0f} MB")
    return problems, enough


async def steady_load(mesh: Mesh, minutes: float, sample_s: float, concurrency: int) -> tuple[list[Sample], int, int]:
    channels = {name: grpc.aio.insecure_channel(mesh.addr(name)) for name in ("auth", "sessions")}
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    client = httpx.AsyncClient(base_url=mesh.gateway_url, limits=limits)
    workers = await make_workers(channels, concurrency, "soak")
    turns = 0
    failed = 0
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + minutes * 60
    started = time.perf_counter()

    async def loop(worker: Worker, offset: int) -> None:
        nonlocal turns, failed
        i = offset
        while time.perf_counter() < deadline:
            call = gateway_chat_turn if i % 2 else gateway_stream_turn
            result = await call(client, worker.user, worker.session_id, PROMPTS[i % len(PROMPTS)])
            turns += result.ok
            failed += not result.ok
            if not result.ok:
                errors[result.error[:120]] += 1
            i += 1
            await _rotate(channels["sessions"], worker)

    async def sampler() -> list[Sample]:
        samples: list[Sample] = []
        while True:
            minute = (time.perf_counter() - started) / 60
            samples += sample_processes(mesh, minute, turns)
            print(_format([s for s in samples if s.minute == round(minute, 2)]), file=sys.stderr, flush=True)
            if time.perf_counter() + 1 >= deadline:
                return samples
            await asyncio.sleep(min(sample_s, max(0.0, deadline - time.perf_counter())))

    try:
        sampling = asyncio.create_task(sampler())
        await asyncio.gather(*(loop(w, i) for i, w in enumerate(workers)))
        samples = await sampling
    finally:
        await client.aclose()
        for channel in channels.values():
            await channel.close()
    if errors:
        print(f"soak: failures {dict(errors.most_common(5))}", file=sys.stderr, flush=True)
    return samples, turns, failed


def _format(samples: list[Sample]) -> str:
    return "\n".join(
        f"min {s.minute:6.2f} turns {s.turns:6d}  {s.process:<12} rss {s.rss_mb:7.1f} MB  threads {s.threads:4d}"
        f"  fds {s.fds:5d}  conns {s.connections:4d}"
        for s in samples
    )


def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES", "10"))
    sample_s = float(os.environ.get("SOAK_SAMPLE_S", "60"))
    concurrency = int(os.environ.get("SOAK_CONCURRENCY", "8"))
    with bench_mesh(OFFLINE_LLM_TTFT_MS="300", OFFLINE_LLM_TOKENS_PER_S="50") as mesh:
        samples, turns, failed = asyncio.run(steady_load(mesh, minutes, sample_s, concurrency))
    problems, enough = judge(samples)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with (RESULTS_DIR / f"soak-{stamp}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["minute", "process", *METRICS, "turns"])
        for s in samples:
            writer.writerow([s.minute, s.process, s.rss_mb, s.threads, s.fds, s.connections, s.turns])
    document: dict[str, Any] = {
        "minutes": minutes,
        "sample_seconds": sample_s,
        "concurrency": concurrency,
        "turns_ok": turns,
        "turns_failed": failed,
        "growing": problems,
        "enough_samples": enough,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "commit": git_commit(),
        "samples": [s.__dict__ for s in samples],
    }
    (RESULTS_DIR / "soak-latest.json").write_text(json.dumps(document, indent=2) + "\n")
    print(_format(samples))
    print(f"soak: {turns} turns ok, {failed} failed in {minutes:g} min")
    if not enough:
        print("soak: fewer than 4 samples after warm-up for some process: growth not judged")
    for problem in problems:
        print(f"soak: LEAK? {problem}")
    return 1 if problems or failed else 0


if __name__ == "__main__":
    sys.exit(main())
