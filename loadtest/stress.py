"""`make loadtest-stress`: the seed's stress test on this machine — 1,500 concurrent users each
doing login -> create session -> chat through the gateway — with a few asyncio client processes
(httpx, STRESS_PROCESSES, default 4) rather than Locust. Each user has a client of its own, as
each browser has its own connections: one shared pool of 1,500 connections made the client the
bottleneck (httpcore scans every pooled connection on each request and each response, so the
cost grows with the square of the users; 60% of the client's CPU went there and the measured
latencies were mostly the client's own queue). The processes split the users so that a burst
of wake-ups does not put one event loop seconds behind; each reports how late its loop ran
(`client_loop_lag_ms`), since that delay is timed with the requests.

The users are registered first, 50 at a time, and that phase is not timed. The mesh started
here (unless --host is given) runs with BCRYPT_ROUNDS=4: with the default cost 12 each login
costs ~250 ms of CPU, and 1,500 of them would measure bcrypt on two cores (about three
minutes of CPU), not the mesh. The offline LLM answers at 300 ms to first token and 50
tokens/s, as the loadtest's, and gateway rate limits are raised (loadtest.run.LOADTEST_ENV).

The gateway refuses what it cannot serve soon (503, or 429 for a per-client limit) with a
`Retry-After`; a user then waits that long plus up to half again (jitter, so the refused do not
all return in the same instant) and repeats the same step, until the flow's deadline (the time
limit). So a step's time (`login_ms`, ...) includes its waits, while `accepted_ms` and
`accepted_p99_ms` time only the attempts that were served: what admission control promises.

Prints and writes (bench/results/stress-latest.json) the success rate, latency percentiles
of each step and of the whole flow, the served requests' latency, the refusals per step, and
throughput; exits 1 when the success rate is below STRESS_MIN_SUCCESS (default 1.0), the
served chats' p99 above STRESS_CHAT_P99_MS (default 3000), or the p99 of all served requests
above STRESS_ACCEPTED_P99_MS (default 3000).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import ssl
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.results import RESULTS_DIR, cpu_model, git_commit
from bench.stats import summary_ms
from loadtest.run import LOADTEST_ENV
from meshctl.mesh import Mesh

PASSWORD = "Stress-Pa55word!"
QUESTION = "Explain quantum computing briefly."
STEPS = ("login", "session", "chat")
# Statuses a refusal with Retry-After comes with: the gateway's admission control, a rate limit.
REFUSED = (429, 503)
JITTER = 0.5
T = TypeVar("T")


@dataclass
class Tally:
    """Refusals and served latencies per step, shared by every user (one event loop: no locks)."""

    shed: Counter[str] = field(default_factory=Counter)
    accepted_s: dict[str, list[float]] = field(default_factory=dict)

    def served(self, step: str, seconds: float) -> None:
        self.accepted_s.setdefault(step, []).append(seconds)

    def merge(self, other: Tally) -> None:
        self.shed.update(other.shed)
        for step, seconds in other.accepted_s.items():
            self.accepted_s.setdefault(step, []).extend(seconds)


def retry_after_s(response: httpx.Response) -> float | None:
    """The refusal's Retry-After in seconds, or None when this is not a refusal to retry."""
    if response.status_code not in REFUSED:
        return None
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


async def send_until_served(
    client: httpx.AsyncClient, step: str, deadline: float, tally: Tally, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """The step's request, repeated after each refusal's Retry-After until served or the
    deadline (perf_counter) would pass; the last response either way."""
    while True:
        sent = time.perf_counter()
        response = await client.request(method, url, **kwargs)
        wait = retry_after_s(response)
        if wait is None:
            tally.served(step, time.perf_counter() - sent)
            return response
        tally.shed[step] += 1
        pause = wait * (1 + random.uniform(0, JITTER))
        if time.perf_counter() + pause >= deadline:
            return response
        await asyncio.sleep(pause)


@dataclass
class FlowResult:
    ok: bool
    step: str = ""
    error: str = ""
    login_s: float = 0.0
    session_s: float = 0.0
    chat_s: float = 0.0
    flow_s: float = 0.0


@dataclass
class StressReport:
    users: int
    results: list[FlowResult] = field(default_factory=list)
    wall_s: float = 0.0
    register_s: float = 0.0
    tally: Tally = field(default_factory=Tally)
    register_shed: int = 0
    processes: int = 1
    loop_lag_s: list[float] = field(default_factory=list)

    def accepted_p99_ms(self) -> dict[str, float | None]:
        served = {step: self.tally.accepted_s.get(step, []) for step in STEPS}
        served["overall"] = [s for step in STEPS for s in served[step]]
        return {name: summary_ms(values).get("p99") for name, values in served.items()}

    def as_json(self) -> dict[str, Any]:
        ok = [r for r in self.results if r.ok]
        failures = Counter(f"{r.step}: {r.error}" for r in self.results if not r.ok)
        shed = {step: self.tally.shed[step] for step in STEPS}
        return {
            "users": self.users,
            "completed_flows": len(self.results),
            "succeeded": len(ok),
            "success_rate": round(len(ok) / self.users, 4) if self.users else 0.0,
            "succeeded_pct": round(100 * len(ok) / self.users, 2) if self.users else 0.0,
            "accepted_p99_ms": self.accepted_p99_ms(),
            "accepted_ms": {step: summary_ms(self.tally.accepted_s.get(step, [])) for step in STEPS},
            "shed": {**shed, "total": sum(shed.values()), "register_untimed": self.register_shed},
            "failures": dict(failures.most_common(10)),
            "wall_seconds": round(self.wall_s, 2),
            "register_seconds_untimed": round(self.register_s, 2),
            "flows_per_s": round(len(ok) / self.wall_s, 2) if self.wall_s else 0.0,
            "login_ms": summary_ms([r.login_s for r in ok]),
            "create_session_ms": summary_ms([r.session_s for r in ok]),
            "chat_ms": summary_ms([r.chat_s for r in ok]),
            "flow_ms": summary_ms([r.flow_s for r in ok]),
            "client_processes": self.processes,
            "client_loop_lag_ms": summary_ms(self.loop_lag_s),
        }


async def register_all(client: httpx.AsyncClient, emails: list[str], deadline: float, concurrency: int = 50) -> int:
    """Registers every user (refusals waited out until the deadline); the number of refusals."""
    gate = asyncio.Semaphore(concurrency)
    tally = Tally()

    async def one(email: str) -> None:
        async with gate:
            for attempt in range(3):
                body = {"email": email, "password": PASSWORD}
                response = await send_until_served(
                    client, "register", deadline, tally, "POST", "/v1/auth/register", json=body
                )
                if response.status_code in (200, 409):
                    return
                await asyncio.sleep(0.5 * (attempt + 1))
            response.raise_for_status()

    await asyncio.gather(*(one(e) for e in emails))
    return tally.shed["register"]


def user_client(host: str, time_limit_s: float, tls: ssl.SSLContext, connections: int = 1) -> httpx.AsyncClient:
    """One user's client: its own few connections (the TLS context is shared: building one per
    client costs milliseconds of CPU each)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(time_limit_s, connect=30.0)
    return httpx.AsyncClient(base_url=host, limits=limits, timeout=timeout, verify=tls)


async def user_flow(
    client: httpx.AsyncClient, email: str, start: asyncio.Event, tally: Tally, time_limit_s: float
) -> FlowResult:
    async with client:
        await start.wait()
        return await user_steps(client, email, tally, time_limit_s)


async def user_steps(client: httpx.AsyncClient, email: str, tally: Tally, time_limit_s: float) -> FlowResult:
    began = time.perf_counter()
    deadline = began + time_limit_s
    step = "login"
    try:
        form = {"username": email, "password": PASSWORD, "grant_type": "password"}
        response = await send_until_served(client, step, deadline, tally, "POST", "/v1/auth/login", data=form)
        login_s = time.perf_counter() - began
        if response.status_code != 200:
            return FlowResult(False, step, f"HTTP {response.status_code}")
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        step = "session"
        mark = time.perf_counter()
        response = await send_until_served(
            client, step, deadline, tally, "POST", "/v1/sessions", json={}, headers=headers
        )
        session_s = time.perf_counter() - mark
        if response.status_code != 200:
            return FlowResult(False, step, f"HTTP {response.status_code}")
        session_id = response.json()["session"]["session_id"]
        step = "chat"
        mark = time.perf_counter()
        body = {"message": {"role": "user", "content": QUESTION}}
        chat_url = f"/v1/sessions/{session_id}:chat"
        response = await send_until_served(client, step, deadline, tally, "POST", chat_url, json=body, headers=headers)
        ended = time.perf_counter()
        if response.status_code != 200 or not response.json().get("messages"):
            return FlowResult(False, step, f"HTTP {response.status_code}")
        return FlowResult(True, "", "", login_s, session_s, ended - mark, ended - began)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return FlowResult(False, step, type(exc).__name__)


async def measure_loop_lag(samples: list[float], interval_s: float = 0.05) -> None:
    """How late this process's event loop wakes up: a late loop delays every user on it, and
    that delay is the client's, not the mesh's (reported, so a reader can tell them apart)."""
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(interval_s)
        samples.append(time.perf_counter() - asked - interval_s)


@dataclass
class Share:
    """What one client process measured for its share of the users."""

    results: list[FlowResult]
    tally: Tally
    wall_s: float
    loop_lag_s: list[float]


async def run_share(host: str, emails: list[str], time_limit_s: float, start_at: float) -> Share:
    """The flows of `emails`, all started at `start_at` (wall clock, shared by the processes)."""
    tally, lag = Tally(), list[float]()
    tls = ssl.create_default_context()
    start = asyncio.Event()
    flows = (user_flow(user_client(host, time_limit_s, tls), e, start, tally, time_limit_s) for e in emails)
    tasks = [asyncio.create_task(flow) for flow in flows]
    await asyncio.sleep(max(0.0, start_at - time.time()))  # every task is parked on the event by now
    lag_task = asyncio.create_task(measure_loop_lag(lag))
    began = time.perf_counter()
    start.set()
    done, pending = await asyncio.wait(tasks, timeout=time_limit_s)
    wall_s = time.perf_counter() - began
    lag_task.cancel()
    for task in pending:
        task.cancel()
    results = [t.result() for t in done]
    results += [FlowResult(False, "timeout", f"not done within {time_limit_s:.0f}s") for _ in pending]
    return Share(results, tally, wall_s, lag)


async def register_share(host: str, emails: list[str], time_limit_s: float) -> int:
    tls = ssl.create_default_context()
    async with user_client(host, time_limit_s, tls, connections=50) as client:
        return await register_all(client, emails, time.perf_counter() + time_limit_s)


def register_worker(host: str, emails: list[str], time_limit_s: float) -> int:
    return asyncio.run(register_share(host, emails, time_limit_s))


def share_worker(host: str, emails: list[str], time_limit_s: float, start_at: float) -> Share:
    return asyncio.run(run_share(host, emails, time_limit_s, start_at))


async def stress(host: str, users: int, time_limit_s: float, processes: int = 1) -> StressReport:
    """The whole test; with `processes` > 1 the users are split between that many client
    processes, so that no one event loop carries all of them (one Python process running
    1,500 users falls seconds behind in a burst, and those seconds would be timed as the
    mesh's)."""
    processes = max(1, min(processes, users))
    report = StressReport(users, processes=processes)
    emails = [f"stress-{uuid.uuid4().hex[:12]}@example.com" for _ in range(users)]
    shares = [emails[i::processes] for i in range(processes)]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=spawn) if processes > 1 else contextlib.nullcontext() as pool:

        async def in_every_share(here: Callable[..., Awaitable[T]], worker: Callable[..., T], *args: Any) -> list[T]:
            if pool is None:
                return [await here(host, emails, *args)]
            loop = asyncio.get_running_loop()
            return list(await asyncio.gather(*(loop.run_in_executor(pool, worker, host, s, *args) for s in shares)))

        began = time.perf_counter()
        report.register_shed = sum(await in_every_share(register_share, register_worker, time_limit_s))
        report.register_s = time.perf_counter() - began
        print(f"stress: registered {users} users in {report.register_s:.1f}s (not timed)", flush=True)
        done = await in_every_share(run_share, share_worker, time_limit_s, time.time() + 1.0)
    for share in done:
        report.results += share.results
        report.tally.merge(share.tally)
        report.loop_lag_s += share.loop_lag_s
        report.wall_s = max(report.wall_s, share.wall_s)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.stress", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("STRESS_HOST", ""), help="gateway URL; empty: own mesh")
    parser.add_argument("--users", type=int, default=int(os.environ.get("STRESS_USERS", "1500")))
    parser.add_argument("--time-limit", type=float, default=float(os.environ.get("STRESS_TIME_LIMIT_S", "300")))
    parser.add_argument(
        "--processes",
        type=int,
        default=int(os.environ.get("STRESS_PROCESSES", "4")),
        help="client processes the users are split between",
    )
    args = parser.parse_args()
    min_success = float(os.environ.get("STRESS_MIN_SUCCESS", "1.0"))
    p99_budget_ms = float(os.environ.get("STRESS_CHAT_P99_MS", "3000"))
    accepted_budget_ms = float(os.environ.get("STRESS_ACCEPTED_P99_MS", "3000"))

    mesh: Mesh | None = None
    base: Path | None = None
    host = args.host
    if not host:
        base = Path(tempfile.mkdtemp(prefix="agentmesh-stress-"))
        env = {**LOADTEST_ENV, "LOG_LEVEL": os.environ.get("STRESS_LOG_LEVEL", "WARNING")}
        mesh = Mesh(base / "data", base / "logs", ephemeral_ports=True, extra_env=env)
        mesh.start()
        host = mesh.gateway_url
    try:
        report = asyncio.run(stress(host, args.users, args.time_limit, args.processes))
    finally:
        if mesh is not None:
            mesh.stop()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)
    result = {
        **report.as_json(),
        "llm": "offline, 300 ms to first token, 50 tokens/s",
        "bcrypt_rounds": 4 if not args.host else "the target's",
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "commit": git_commit(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "stress-latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    missed = []
    if result["success_rate"] < min_success:
        missed.append(f"success rate {result['success_rate']:.2%} < {min_success:.2%}")
    accepted = report.accepted_p99_ms()
    for name, budget in (("chat", p99_budget_ms), ("overall", accepted_budget_ms)):
        p99 = accepted[name]
        if p99 is None or p99 > budget:
            missed.append(f"served {name} p99 {p99 if p99 is None else round(p99)} ms > {budget:.0f} ms")
    print("stress: " + ("; ".join(missed) if missed else "goals met"), flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
