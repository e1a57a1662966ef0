"""The clients of the rolling-restart tests (tests/k8s/test_rolling_restart.py): each streams
turns through the gateways without a pause and resumes a stream that ends early through
another gateway with `Last-Event-ID`, tallying whatever went wrong."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from meshctl.processes import ChildProcess
from tests.support.users import MeshUser

SSE = {"Accept": "text/event-stream"}


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
        response = await self.http.post(f"{url}/v1/auth/register", json={"email": email, "password": MeshUser.PASSWORD})
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
