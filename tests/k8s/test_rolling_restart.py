"""Issue 17's rolling restart, on loopback: two replicas of the agent and two of the gateway,
stopped the way the manifests stop a pod (`k8s_check.drain_plan`: preStop sleep, SIGTERM,
SIGKILL after the grace period), each restarted in turn while clients stream turns
without a pause. No turn may fail.

The manifests' 300 s drains and 320 s grace are scaled by SCALE (x0.1: preStop 0.5 s,
drain 30 s, grace 32 s, GATEWAY_STREAM_TIMEOUT 30 s), their relations kept. The agents get
their own offline model streaming TOKENS_PER_S tokens a second, so a turn takes a few
seconds and turns are in flight at every SIGTERM; the agent lets runs finish for
0.8 x drain - 1 s (23 s here), longer than any turn.

What the orchestration stands in for: during a gateway's preStop the clients stop sending
it new turns (the endpoints dropped the pod); an agent's SIGTERM closes its server, so the
gateways' round_robin channels route new calls to the other replica. Before the next
replica goes, every gateway must be connected to the restarted agent again (a new pod is
Ready before the old one goes; locally the same port comes back, and a channel's reconnect
backoff could otherwise still be waiting when the other replica leaves).

Clients: a stream that ends without `completed` or `error` (dropped, or broken by a restart)
is resumed through another gateway with `Last-Event-ID` (StreamRun). One client drops its
connection whenever its gateway starts terminating (as a client on a flaky network, or an
ingress that closes its upstreams would), so the resume path runs at every gateway restart,
not only when something breaks.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from meshctl.mesh import GATEWAY_READY, OFFLINE_LLM_READY, Mesh, free_port
from meshctl.processes import ChildProcess, python_module

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("k8s_check", ROOT / "scripts" / "k8s_check.py")
assert _spec is not None and _spec.loader is not None
k8s_check = sys.modules.get("k8s_check") or importlib.util.module_from_spec(_spec)
if "k8s_check" not in sys.modules:
    sys.modules["k8s_check"] = k8s_check
    _spec.loader.exec_module(k8s_check)

SCALE = 0.1
CLIENTS = 4
TOKENS_PER_S = 12
PASSWORD = "Corr3ct-Horse!"
SSE = {"Accept": "text/event-stream"}
RATE_LIMITS = {
    f"RATE_LIMIT_{name}": "100000 per minute"
    for name in ("DEFAULT", "READ", "CHAT", "CHAT_STREAM", "MESSAGES", "LOGIN", "REGISTER")
}


@dataclass
class Replica:
    """One pod: its process, how the manifests stop it, whether it is terminating."""

    name: str
    child: ChildProcess
    plan: Any  # k8s_check.DrainPlan, scaled
    port: int
    terminating: bool = False
    url: str = ""
    drains: list[float] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)  # turns streaming through it at SIGTERM


@dataclass
class Tally:
    turns: int = 0
    resumes: int = 0
    dropped: int = 0
    cut: int = 0  # streams that broke (not dropped by the client), each resumed
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    runs: dict[str, list[str]] = field(default_factory=dict)  # session -> run ids
    longest_turn_s: float = 0.0


T0 = time.monotonic()


def note(what: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {what}", flush=True)


def scaled(plan: Any) -> Any:
    return type(plan)(
        pre_stop_s=plan.pre_stop_s * SCALE,
        drain_s=plan.drain_s * SCALE,
        grace_s=plan.grace_s * SCALE,
        env={key: f"{float(value) * SCALE:g}" for key, value in plan.env.items()},
    )


@pytest.fixture(scope="module")
def plans() -> dict[str, Any]:
    docs = k8s_check.render_overlay("prod")
    return {name: k8s_check.drain_plan(docs, name) for name in ("agent", "gateway")}


@pytest.fixture(scope="module")
def slow_llm(mesh: Mesh) -> Iterator[str]:
    child = ChildProcess(
        "offline-llm-rolling",
        python_module("offline_llm"),
        {**mesh.env, "OFFLINE_LLM_PORT": str(free_port()), "OFFLINE_LLM_TOKENS_PER_S": str(TOKENS_PER_S)},
        mesh.log_dir / "offline-llm-rolling.log",
        OFFLINE_LLM_READY,
    ).start()
    try:
        yield child.ready_match["url"].rstrip("/") + "/v1"
    finally:
        child.stop()


@dataclass
class Fleet:
    agents: list[Replica]
    gateways: list[Replica]


@pytest.fixture
def fleet(mesh: Mesh, plans: dict[str, Any], slow_llm: str) -> Iterator[Fleet]:
    """Two agents on the slow model and two gateways spreading calls over both (round_robin
    over an `ipv4:` list, as over a headless Service's DNS answer). Each test gets its own:
    a restart test leaves its replicas in no particular state."""
    agent_plan, gateway_plan = scaled(plans["agent"]), scaled(plans["gateway"])
    agent_ports = [free_port() for _ in range(2)]
    agent_target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in agent_ports)
    fleet = Fleet([], [])
    for i, port in enumerate(agent_ports, start=1):
        env = mesh.service_env(
            "agent", GRPC_PORT=str(port), METRICS_PORT=str(free_port()), LLM_BASE_URL=slow_llm, **agent_plan.env
        )
        child = ChildProcess(
            f"agent-rolling{i}", python_module("services.agent"), env, mesh.log_dir / f"agent-rolling{i}.log"
        )
        fleet.agents.append(Replica(f"agent-{i}", child, agent_plan, port))
    for i in (1, 2):
        port = free_port()
        env = {
            **mesh.env,
            **RATE_LIMITS,
            **gateway_plan.env,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_METRICS_PORT": str(free_port()),
            "GATEWAY_STREAM_TIMEOUT": f"{float(plans['gateway'].drain_s) * SCALE:g}",
            "AGENT_ADDR": agent_target,
        }
        child = ChildProcess(
            f"gateway-rolling{i}",
            python_module("gateway"),
            env,
            mesh.log_dir / f"gateway-rolling{i}.log",
            GATEWAY_READY,
        )
        fleet.gateways.append(Replica(f"gateway-{i}", child, gateway_plan, port, url=f"http://127.0.0.1:{port}"))
    replicas = [*fleet.agents, *fleet.gateways]
    try:
        # Agents first: a gateway that finds no agent listening backs off before trying again.
        for group in (fleet.agents, fleet.gateways):
            for replica in group:
                replica.child.spawn()
            for replica in group:
                replica.child.wait_ready(90)
        yield fleet
    finally:
        for replica in replicas:
            replica.child.stop()


# ---------------------------------------------------------------- clients


async def sse(response: httpx.Response) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    block: list[str] = []
    async for line in response.aiter_lines():
        if line:
            block.append(line)
            continue
        fields = dict(item.split(": ", 1) for item in block if ": " in item and not item.startswith(":"))
        block = []
        if "data" in fields:
            yield int(fields["id"]), json.loads(fields["data"])


def serving(gateways: list[Replica], turn: int) -> Replica:
    """A gateway the endpoints still list (the clients' load balancer)."""
    ready = [g for g in gateways if not g.terminating and g.child.running()]
    return ready[turn % len(ready)] if ready else gateways[turn % len(gateways)]


class Client:
    def __init__(self, number: int, gateways: list[Replica], tally: Tally, *, drops_on_termination: bool) -> None:
        self.number = number
        self.gateways = gateways
        self.tally = tally
        self.drops = drops_on_termination
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5))
        self.auth: dict[str, str] = {}
        self.session_id = ""
        self.turn = itertools.count()
        # The gateway this client's open stream goes through, once its run has started.
        self.streaming_via: Replica | None = None

    async def sign_up(self) -> None:
        url = serving(self.gateways, self.number).url
        email = f"rolling-{uuid.uuid4().hex[:12]}@example.com"
        response = await self.http.post(f"{url}/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        self.auth = {"Authorization": f"Bearer {response.json()['tokens']['access_token']}"}
        created = await self.http.post(f"{url}/v1/sessions", json={}, headers=self.auth)
        self.session_id = created.json()["session"]["session_id"]
        self.tally.runs[self.session_id] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.one_turn(next(self.turn))

    async def one_turn(self, turn: int) -> None:
        message = f"Tell me about the harbour, turn {turn} of client {self.number}"
        started = time.monotonic()
        for attempt in range(3):
            events = await self.stream_turn(turn, message)
            if not events:
                return
            last = events[-1][1]
            if "completed" in last:
                self.check(events)
                self.tally.turns += 1
                self.tally.longest_turn_s = max(self.tally.longest_turn_s, time.monotonic() - started)
                note(f"client {self.number} turn {turn}: {time.monotonic() - started:.1f}s, {len(events)} events")
                return
            # An `error` event: the drain cut the run (kept as interrupted); send it again.
            self.tally.errors.append(f"client {self.number} turn {turn} attempt {attempt}: {last}")
        self.tally.problems.append(f"client {self.number} turn {turn}: no attempt completed")

    async def stream_turn(self, turn: int, message: str) -> list[tuple[int, dict[str, Any]]]:
        gateway = serving(self.gateways, turn + self.number)
        events: list[tuple[int, dict[str, Any]]] = []
        try:
            async with self.http.stream(
                "POST",
                f"{gateway.url}/v1/sessions/{self.session_id}:stream",
                json={"message": {"role": "user", "content": message}},
                headers={**self.auth, **SSE},
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    self.tally.problems.append(f"{gateway.name} refused a turn: {response.status_code} {response.text}")
                    return []
                async for event in sse(response):
                    events.append(event)
                    self.streaming_via = gateway
                    if is_terminal(event[1]):
                        break
                    if self.drops and gateway.terminating:
                        self.tally.dropped += 1
                        break
        except httpx.TransportError as exc:
            # Once the run has started, a broken stream is resumed like a dropped one.
            self.tally.cut += bool(events)
            note(f"client {self.number} turn {turn} via {gateway.name}: {exc!r} after {len(events)} events")
        finally:
            self.streaming_via = None
        if not events:
            self.tally.problems.append(f"client {self.number} turn {turn}: no run started via {gateway.name}")
            return []
        run_id = events[0][1]["run_id"]
        self.tally.runs[self.session_id].append(run_id)
        for _ in range(10):
            if is_terminal(events[-1][1]):
                return events
            self.tally.resumes += 1
            events += await self.resume(run_id, events[-1][0], avoid=gateway)
        self.tally.problems.append(f"client {self.number} run {run_id}: no last event after 10 resumes")
        return events

    async def resume(self, run_id: str, last_id: int, avoid: Replica) -> list[tuple[int, dict[str, Any]]]:
        others = [g for g in self.gateways if g is not avoid and not g.terminating and g.child.running()]
        gateway = others[0] if others else serving(self.gateways, last_id)
        events: list[tuple[int, dict[str, Any]]] = []
        try:
            async with self.http.stream(
                "GET",
                f"{gateway.url}/v1/sessions/{self.session_id}/runs/{run_id}:stream",
                headers={**self.auth, **SSE, "Last-Event-ID": str(last_id)},
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    self.tally.problems.append(f"resume via {gateway.name}: {response.status_code} {response.text}")
                    await asyncio.sleep(0.5)
                    return []
                async for event in sse(response):
                    events.append(event)
                    if is_terminal(event[1]):
                        break
        except httpx.TransportError as exc:
            self.tally.cut += 1
            note(f"client {self.number} resume via {gateway.name}: {exc!r}")
            await asyncio.sleep(0.5)
        return events

    def check(self, events: list[tuple[int, dict[str, Any]]]) -> None:
        """Every event once, in order, across resumes; the tokens make the answer."""
        ids = [event_id for event_id, _ in events]
        if ids != list(range(1, len(ids) + 1)) or [e["seq"] for _, e in events] != ids:
            self.tally.problems.append(f"client {self.number}: event ids {ids}")
        text = "".join(e["token"]["text"] for _, e in events if "token" in e)
        if text != events[-1][1]["completed"]["message"]["content"]:
            self.tally.problems.append(f"client {self.number}: streamed text differs from the answer")


def is_terminal(event: dict[str, Any]) -> bool:
    return "completed" in event or "error" in event


# ---------------------------------------------------------------- the rollout


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


async def until(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def restart_agent(agent: Replica, gateways: list[Replica], *, others_follow: bool) -> None:
    # A replica with turns in flight: the drain has something to do.
    await until(lambda: runs_in_flight(agent) > 0, 15)
    agent.in_flight.append(runs_in_flight(agent))
    await terminate(agent)
    await asyncio.to_thread(agent.child.start, 90)
    note(f"{agent.name}: ready again")
    agent.terminating = False
    if not others_follow:
        return
    deadline = time.monotonic() + 40
    while not all(connected(g, agent.port) for g in gateways):
        assert time.monotonic() < deadline, f"the gateways did not reconnect to {agent.name}"
        await asyncio.sleep(0.2)
    note(f"{agent.name}: both gateways connected")


async def restart_gateway(gateway: Replica, clients: list[Client]) -> None:
    # The client that drops its connection has a started stream through this gateway.
    await until(lambda: clients[0].streaming_via is gateway, 15)
    gateway.in_flight.append(sum(client.streaming_via is gateway for client in clients))
    await terminate(gateway)
    await asyncio.to_thread(gateway.child.start)
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 30
        while (await http.get(f"{gateway.url}/readyz")).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
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
        deadline = time.monotonic() + 30
        while tally.turns < CLIENTS:  # every client streams before the first replica goes
            assert time.monotonic() < deadline and not tally.problems, tally
            await asyncio.sleep(0.2)
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


# The fixtures start two agents and two gateways (~20 s on a loaded machine) before the
# restarts; an agent takes ~20 s to start there, and a gateway's channel up to ~15 s
# more to reconnect to it (gRPC's reconnect backoff), so the full rollout takes minutes.
@pytest.mark.slow
@pytest.mark.timeout(360)
async def test_rolling_restart_of_every_agent_and_gateway_fails_no_turn(fleet: Fleet) -> None:
    await check_rollout(fleet, [*fleet.agents, *fleet.gateways])


@pytest.mark.timeout(240)
async def test_restarting_one_gateway_and_one_agent_under_load_fails_no_turn(fleet: Fleet) -> None:
    """The short variant `make test` runs: one replica of each, with turns in flight."""
    await check_rollout(fleet, [fleet.gateways[0], fleet.agents[0]])
