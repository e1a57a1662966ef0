"""`make profile` (`python -m bench.profile`): where the CPU goes during chat turns under load.

Starts a bench mesh (zero-latency LLM), drives PROFILE_CONCURRENCY (default 16) closed-loop
chat turns through the gateway for PROFILE_SECONDS (default 30) — or, with
PROFILE_WORKLOAD=getme, GetMe calls through the gateway (the gateway's own cost), or with
PROFILE_WORKLOAD=stream, streamed turns (the relay of each token event) — and samples every
mesh process with py-spy (`py-spy record --format raw`, on-CPU samples only; needs ptrace,
root is fine; `pip install py-spy`). Writes per process the collapsed stacks
(bench/results/profile-<process>.txt, loadable in speedscope or flamegraph.pl) and prints
and writes (profile-summary.txt) each process's share of the samples and its top frames by
self time and by total time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import httpx

from bench.clients import PROMPTS, TurnTiming, gateway_chat_turn, gateway_stream_turn
from bench.mesh_run import bench_mesh
from bench.results import RESULTS_DIR
from bench.turns import Worker, _rotate, make_workers
from meshctl.mesh import Mesh

# Leaves where a thread waits rather than runs (py-spy's idle detection misses some of them).
IDLE_LEAVES = ("EpollSelector.select", "_PollLikeSelector.select", "_worker (", "Thread.run (", "Condition.wait")
OUR_CODE = ("services/", "gateway/", "runtime/", "offline_llm/")
PROFILED = ("gateway", "agent", "auth", "sessions", "memory", "evals", "offline-llm")
TOP = 25


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def frame_label(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; shorten site-packages paths.
    return frame.replace(str(Path(sys.executable).parent.parent / "lib"), "").replace("site-packages/", "")


def summarise(collapsed: Path, top: int = TOP) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Busy samples, top frames by self time, and top frames of our own code by total time
    (each including the library calls it makes), idle leaves left out."""
    self_time: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_label(f) for f in stack.split(";") if f]
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            continue
        samples += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            if any(part in frame for part in OUR_CODE) and "__main__" not in frame and " run (" not in frame:
                ours[frame] += count
    return samples, self_time.most_common(top), ours.most_common(top)


async def drive(mesh: Mesh, concurrency: int, seconds: float, workload: str) -> int:
    channels = {name: grpc.aio.insecure_channel(mesh.addr(name)) for name in ("auth", "sessions")}
    client = httpx.AsyncClient(base_url=mesh.gateway_url, limits=httpx.Limits(max_connections=concurrency * 2))
    workers = await make_workers(channels, concurrency, "profile")
    deadline = time.perf_counter() + seconds
    turns = 0
    errors: Counter[str] = Counter()

    async def loop(worker: Worker, offset: int) -> None:
        nonlocal turns
        i = offset
        while time.perf_counter() < deadline:
            if workload == "getme":
                started = time.perf_counter()
                response = await client.get("/v1/auth/me", headers=worker.user.headers)
                ok = response.status_code == 200
                result = TurnTiming(ok, 0.0, time.perf_counter() - started, 0, "" if ok else str(response.status_code))
            else:
                turn = gateway_stream_turn if workload == "stream" else gateway_chat_turn
                result = await turn(client, worker.user, worker.session_id, PROMPTS[i % len(PROMPTS)])
            turns += result.ok
            if not result.ok:
                errors[result.error] += 1
            i += 1
            if workload != "getme":
                await _rotate(channels["sessions"], worker)

    try:
        await asyncio.gather(*(loop(w, i) for i, w in enumerate(workers)))
    finally:
        await client.aclose()
        for channel in channels.values():
            await channel.close()
    if errors:
        print(f"failed turns: {dict(errors)}", file=sys.stderr, flush=True)
    return turns


def main() -> int:
    seconds = float(os.environ.get("PROFILE_SECONDS", "30"))
    concurrency = int(os.environ.get("PROFILE_CONCURRENCY", "16"))
    rate = os.environ.get("PROFILE_RATE", "67")
    workload = os.environ.get("PROFILE_WORKLOAD", "chat")
    spy = py_spy()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    with bench_mesh() as mesh:
        recorders = []
        for name in PROFILED:
            child = mesh.processes.get(name)
            if child is None or not child.running():
                continue
            outputs[name] = RESULTS_DIR / f"profile-{workload}-{name}.txt"
            recorders.append(
                subprocess.Popen(
                    [spy, "record", "--pid", str(child.pid), "--duration", str(int(seconds)), "--rate", rate,
                     "--format", "raw", "--nonblocking", "--output", str(outputs[name])],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        turns = asyncio.run(drive(mesh, concurrency, seconds, workload))
        for recorder in recorders:
            recorder.wait(timeout=seconds + 60)
    what = "GetMe calls" if workload == "getme" else "chat turns"
    lines = [f"{turns} {what} through the gateway in {seconds:g}s at concurrency {concurrency}", ""]
    for name, path in outputs.items():
        if not path.exists():
            lines.append(f"## {name}: no profile (py-spy failed)")
            continue
        samples, by_self, by_total = summarise(path)
        lines.append(f"## {name}: {samples} busy samples at {rate} Hz (~{samples / float(rate):.1f} CPU-s)")
        lines.append("top by self time:")
        lines += [f"  {count / max(samples, 1):6.1%}  {frame}" for frame, count in by_self]
        lines.append("our code by total time (with the library calls it makes):")
        lines += [f"  {count / max(samples, 1):6.1%}  {frame}" for frame, count in by_total]
        lines.append("")
    text = "\n".join(lines)
    (RESULTS_DIR / f"profile-{workload}-summary.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
