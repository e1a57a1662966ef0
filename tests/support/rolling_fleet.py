"""The fleet of the rolling-restart tests (tests/k8s/test_rolling_restart.py): replicas stopped
the way the manifests stop a pod, restarted in turn under the clients' load, and the checks of
what the rollout did."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import pytest

from tests.support.rolling_clients import Client, Replica, Tally, note
from tests.support.waiting import eventually

SCALE = 0.1
CLIENTS = 4
TOKENS_PER_S = 12
RATE_LIMITS = {
    f"RATE_LIMIT_{name}": "100000 per minute"
    for name in ("DEFAULT", "READ", "CHAT", "CHAT_STREAM", "MESSAGES", "LOGIN", "REGISTER")
}


@dataclass
class Fleet:
    agents: list[Replica]
    gateways: list[Replica]


def scaled(plan: Any) -> Any:
    return type(plan)(
        pre_stop_s=plan.pre_stop_s * SCALE,
        drain_s=plan.drain_s * SCALE,
        grace_s=plan.grace_s * SCALE,
        env={key: f"{float(value) * SCALE:g}" for key, value in plan.env.items()},
    )


def connected(gateway: Replica, port: int) -> bool:
    try:
        conns = psutil.Process(gateway.child.pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED for c in conns)


async def terminate(replica: Replica) -> None:
    """preStop, SIGTERM, wait for the drain; SIGKILL only past the grace period."""
    replica.terminating = True
    note(f"{replica.name}: preStop ({replica.in_flight[-1]} turns in flight)")
    await asyncio.sleep(replica.plan.pre_stop_s)
    sent = time.monotonic()
    replica.child.signal(signal.SIGTERM)
    process = replica.child.process
    assert process is not None
    try:
        code = await asyncio.to_thread(process.wait, replica.plan.grace_s - replica.plan.pre_stop_s)
    except Exception:  # subprocess.TimeoutExpired: the kubelet would SIGKILL now
        replica.child.kill()
        code = -9
    replica.drains.append(time.monotonic() - sent)
    note(f"{replica.name}: exited {code} {replica.drains[-1]:.1f}s after SIGTERM")
    # uvicorn re-raises the captured SIGTERM once its graceful shutdown is done, so a
    # gateway that drained exits by that signal; the services exit 0.
    clean = (0, -signal.SIGTERM) if replica.name.startswith("gateway") else (0,)
    assert code in clean, f"{replica.name} exited with {code} after SIGTERM"


def runs_in_flight(agent: Replica) -> int:
    text = httpx.get(f"http://{agent.child.metrics_addr}/metrics", timeout=5).text
    return sum(
        int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith("agent_runs_in_flight")
    )


async def restart_agent(agent: Replica, gateways: list[Replica], *, others_follow: bool) -> None:
    # A replica with turns in flight: the drain has something to do. Best effort: if none
    # starts in time the restart goes ahead, and check_rollout reports the empty drain.
    async def busy() -> None:
        assert await asyncio.to_thread(runs_in_flight, agent) > 0

    with contextlib.suppress(AssertionError):
        await eventually(busy, timeout_s=15, interval_s=0.1)
    agent.in_flight.append(runs_in_flight(agent))
    await terminate(agent)
    await asyncio.to_thread(agent.child.start, 90)
    note(f"{agent.name}: ready again")
    agent.terminating = False
    if not others_follow:
        return

    async def reconnected() -> None:
        assert all(connected(g, agent.port) for g in gateways), f"the gateways did not reconnect to {agent.name}"

    await eventually(reconnected, timeout_s=40, interval_s=0.2)
    note(f"{agent.name}: both gateways connected")


async def restart_gateway(gateway: Replica, clients: list[Client]) -> None:
    # The client that drops its connection has a started stream through this gateway. Best
    # effort, as for the agents: check_rollout judges what the restart found.
    async def streaming_through() -> None:
        assert clients[0].streaming_via is gateway

    with contextlib.suppress(AssertionError):
        await eventually(streaming_through, timeout_s=15, interval_s=0.1)
    gateway.in_flight.append(sum(client.streaming_via is gateway for client in clients))
    await terminate(gateway)
    await asyncio.to_thread(gateway.child.start)
    async with httpx.AsyncClient() as http:

        async def ready() -> None:
            assert (await http.get(f"{gateway.url}/readyz")).status_code == 200, f"{gateway.name} is not ready"

        await eventually(ready, timeout_s=30, interval_s=0.2)
    gateway.terminating = False
    note(f"{gateway.name}: ready again")


async def rolling_restart(fleet: Fleet, restart: list[Replica]) -> tuple[Tally, dict[str, str]]:
    """Restarts `restart` in order under the clients' load; the tally and every run's status."""
    tally = Tally()
    clients = [Client(n, fleet.gateways, tally, drops_on_termination=n == 0) for n in range(CLIENTS)]
    note("clients signing up")
    for client in clients:
        await client.sign_up()
    note("clients streaming")
    stop = asyncio.Event()
    loops = [asyncio.create_task(client.run(stop)) for client in clients]
    try:

        async def every_client_streamed() -> None:  # before the first replica goes
            if tally.problems:
                pytest.fail(f"problems before the first restart: {tally}")
            assert tally.turns >= CLIENTS, tally

        await eventually(every_client_streamed, timeout_s=30, interval_s=0.2)
        for position, replica in enumerate(restart):
            if replica in fleet.agents:
                later_agents = [r for r in restart[position + 1 :] if r in fleet.agents]
                await restart_agent(replica, fleet.gateways, others_follow=bool(later_agents))
            else:
                await restart_gateway(replica, clients)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), timeout=60)
        statuses = {}
        for client in clients:
            listed = await client.http.get(
                f"{fleet.gateways[0].url}/v1/sessions/{client.session_id}/runs",
                params={"page_size": 100},
                headers=client.auth,
            )
            statuses |= {run["run_id"]: run["status"] for run in listed.json()["runs"]}
    finally:
        stop.set()
        for task in loops:
            task.cancel()
        for client in clients:
            await client.http.aclose()
    return tally, statuses


async def check_rollout(fleet: Fleet, restart: list[Replica]) -> None:
    began = time.monotonic()
    tally, statuses = await rolling_restart(fleet, restart)
    report = {
        "seconds": round(time.monotonic() - began, 1),
        "turns": tally.turns,
        "resumed streams": tally.resumes,
        "dropped by the client at a gateway's termination": tally.dropped,
        "streams broken by a restart (resumed)": tally.cut,
        "error events": len(tally.errors),
        "longest turn s": round(tally.longest_turn_s, 1),
        "drain s (SIGTERM to exit)": {r.name: [round(d, 1) for d in r.drains] for r in restart},
        "turns in flight at SIGTERM": {r.name: r.in_flight for r in restart},
        "run statuses": sorted(set(statuses.values())),
    }
    print(f"rolling restart: {report}")
    assert tally.problems == [] and tally.errors == [], (tally.problems, tally.errors)
    # The resume path ran: every stream a client dropped was resumed through the other gateway.
    assert tally.dropped >= 1 and tally.resumes >= tally.dropped, report
    assert tally.turns >= 2 * CLIENTS, report
    # Every run the clients started, and no other, ended SUCCEEDED.
    started = {run_id for runs in tally.runs.values() for run_id in runs}
    assert set(statuses) == started and set(statuses.values()) == {"RUN_STATUS_SUCCEEDED"}, statuses
    # Each SIGTERM found turns in flight, and no drain needed the SIGKILL.
    assert all(count > 0 for r in restart for count in r.in_flight), report
    assert all(drain < r.plan.grace_s - r.plan.pre_stop_s for r in restart for drain in r.drains), report
