"""The chaos suite's steady load: closed-loop clients chatting through the gateway until
stopped, each turn stating a new fact (so it owes a memory write and a trace), every turn recorded."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass

import grpc
import httpx

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh

TURN_TIMEOUT_S = 60.0
SESSION_TURNS = 10
FAILED_TURN_PAUSE_S = 1.0


@dataclass
class Turn:
    started: float
    ended: float
    ok: bool
    run_id: str = ""
    error: str = ""
    client: int = -1


@dataclass
class Client:
    email: str
    password: str
    token: str
    session_id: str
    turns_in_session: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


PASSWORD = "Chaos-Pa55word!"


def error_reason(response: httpx.Response) -> str:
    """The ErrorInfo reason of a gateway error body (google.rpc.Status as JSON)."""
    try:
        details = response.json().get("details") or []
    except (ValueError, AttributeError):
        return ""
    return next((str(d["reason"]) for d in details if isinstance(d, dict) and d.get("reason")), "")


class Load:
    """Closed-loop clients chatting through the gateway until stopped; every turn recorded."""

    def __init__(self, mesh: Mesh, concurrency: int) -> None:
        self.mesh = mesh
        self.concurrency = concurrency
        self.turns: list[Turn] = []
        self.user_ids: list[str] = []
        self._stop = asyncio.Event()
        self._go = asyncio.Event()
        self._go.set()
        self._in_flight = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._http = httpx.AsyncClient(base_url=mesh.gateway_url, timeout=TURN_TIMEOUT_S)
        self._auth = grpc.aio.insecure_channel(mesh.addr("auth"))
        self._sessions = grpc.aio.insecure_channel(mesh.addr("sessions"))

    async def new_client(self) -> Client:
        email = f"chaos-{uuid.uuid4().hex[:12]}@example.com"
        auth = auth_pb2_grpc.AuthServiceStub(self._auth)
        registered = await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD), timeout=30)
        self.user_ids.append(registered.user.id)
        client = Client(email, PASSWORD, registered.tokens.access_token, "")
        client.session_id = await self._new_session(client)
        return client

    async def _new_session(self, client: Client) -> str:
        stub = sessions_pb2_grpc.SessionServiceStub(self._sessions)
        metadata = (("authorization", f"Bearer {client.token}"),)
        created = await stub.CreateSession(sessions_pb2.CreateSessionRequest(), metadata=metadata, timeout=10)
        return str(created.session.session_id)

    async def turn(self, client: Client, text: str, timeout_s: float = TURN_TIMEOUT_S) -> Turn:
        started = time.monotonic()
        body = {"message": {"role": "user", "content": text}}
        try:
            response = await self._http.post(
                f"/v1/sessions/{client.session_id}:chat", json=body, headers=client.headers, timeout=timeout_s
            )
        except httpx.HTTPError as exc:
            return Turn(started, time.monotonic(), False, error=type(exc).__name__)
        ended = time.monotonic()
        if response.status_code != 200:
            return Turn(started, ended, False, error=f"HTTP {response.status_code} {error_reason(response)}".strip())
        data = response.json()
        return Turn(started, ended, True, run_id=str(data.get("runId") or data.get("run_id") or ""))

    async def _rotate(self, client: Client) -> None:
        client.turns_in_session += 1
        if client.turns_in_session >= SESSION_TURNS:
            with contextlib.suppress(grpc.aio.AioRpcError):
                client.session_id = await self._new_session(client)
                client.turns_in_session = 0

    async def _loop(self, index: int, client: Client) -> None:
        while not self._stop.is_set():
            await self._go.wait()
            if self._stop.is_set():
                return
            self._in_flight += 1
            try:
                # A new fact every turn: the memory service owes a write for each one.
                turn = await self.turn(client, f"I like chaos topic {uuid.uuid4().hex[:10]}.")
            finally:
                self._in_flight -= 1
            turn.client = index
            self.turns.append(turn)
            if not turn.ok:
                with contextlib.suppress(asyncio.TimeoutError):  # a user retries, but not in a hot loop
                    await asyncio.wait_for(self._stop.wait(), FAILED_TURN_PAUSE_S)
                continue
            await self._rotate(client)

    async def start(self) -> None:
        clients = await asyncio.gather(*(self.new_client() for _ in range(self.concurrency)))
        self._tasks = [asyncio.create_task(self._loop(i, client)) for i, client in enumerate(clients)]

    def all_served_since(self, moment: float) -> bool:
        """Whether every client has had a turn answered that started at or after `moment`."""
        served = {t.client for t in self.turns if t.ok and t.started >= moment}
        return len(served) >= self.concurrency

    async def pause(self) -> None:
        """No new turns; returns once the turns in flight have ended."""
        self._go.clear()
        while self._in_flight:  # noqa: ASYNC110 (a short wait for a few turns, polled)
            await asyncio.sleep(0.05)

    def resume(self) -> None:
        self._go.set()

    async def stop(self) -> None:
        self._stop.set()
        self._go.set()
        for task in self._tasks:  # a turn in flight may take TURN_TIMEOUT_S; the end need not wait
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self._http.aclose()
        await self._auth.close()
        await self._sessions.close()
