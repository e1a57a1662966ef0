"""What "recovered" and "nothing lost" mean for the chaos suite, asked of the real processes
(health, readiness, a canary turn) and the database (every succeeded run's hand-offs)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc
import httpx
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.chaos_load import Client, Load
from bench.chaos_mesh import SupervisedMesh

GRPC_SERVICES = {
    "auth": "agentmesh.auth.v1.AuthService",
    "sessions": "agentmesh.sessions.v1.SessionService",
    "memory": "agentmesh.memory.v1.MemoryService",
    "evals": "agentmesh.evals.v1.EvalService",
    "agent": "agentmesh.agent.v1.AgentService",
}


class Checks:
    """What "recovered" and "nothing lost" mean, asked of the real processes and database."""

    def __init__(self, supervised: SupervisedMesh, load: Load) -> None:
        self.supervised = supervised
        self.mesh = supervised.mesh
        self.load = load
        self.database_url = self.mesh.env["DATABASE_URL"]
        self._canary: Client | None = None

    async def _db(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.database_url, autocommit=True, connect_timeout=3)

    async def db_now(self) -> Any:
        async with await self._db() as conn:
            row = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
        assert row is not None
        return row[0]

    async def serving(self) -> bool:
        if self.supervised.not_ready():
            return False
        for name, service in GRPC_SERVICES.items():
            try:
                async with grpc.aio.insecure_channel(self.mesh.addr(name)) as channel:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=2
                    )
            except grpc.aio.AioRpcError:
                return False
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                return False
        try:
            async with httpx.AsyncClient(base_url=self.mesh.gateway_url, timeout=2) as client:
                if (await client.get("/readyz")).status_code != 200:
                    return False
        except httpx.HTTPError:
            return False
        return True

    async def canary_turn(self) -> bool:
        try:
            if self._canary is None:
                self._canary = await self.load.new_client()
            # A fact like every turn's: the canary's runs are checked for their hand-offs too.
            text = f"I like canary topic {uuid.uuid4().hex[:10]}."
            return (await self.load.turn(self._canary, text, timeout_s=15)).ok
        except grpc.aio.AioRpcError:
            return False

    async def wait_recovered(self, timeout_s: float) -> float | None:
        """Seconds until the mesh serves everyone again: every health SERVING, /readyz 200, a new
        client's chat turn answered, and each load client's too (a session whose turn was cut
        off stays busy until that run is settled); None if not within `timeout_s`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if await self.serving() and await self.canary_turn() and self.load.all_served_since(started):
                return time.monotonic() - started
            await asyncio.sleep(0.25)
        return None

    async def lost_hand_offs(self, since: Any, until: Any) -> tuple[list[str], list[str], int]:
        """Succeeded runs that ended in [since, until) without their memory write or trace, and
        the outbox's dead letters of the window."""
        async with await self._db() as conn:
            rows = await (
                await conn.execute(
                    "SELECT r.run_id::text,"
                    " EXISTS (SELECT 1 FROM memory.add_requests a WHERE a.user_id = r.user_id"
                    "   AND a.idempotency_key = r.run_id::text),"
                    " EXISTS (SELECT 1 FROM evals.traces t WHERE t.trace_id = r.run_id::text)"
                    " FROM agent.runs r WHERE r.status = 'succeeded' AND r.end_time >= %s AND r.end_time < %s",
                    (since, until),
                )
            ).fetchall()
            dead = await (
                await conn.execute(
                    "SELECT count(*) FROM agent.outbox WHERE dead_at IS NOT NULL AND created_at >= %s"
                    " AND created_at < %s",
                    (since, until),
                )
            ).fetchone()
        memory = [run_id for run_id, has_memory, _ in rows if not has_memory]
        traces = [run_id for run_id, _, has_trace in rows if not has_trace]
        return memory, traces, int(dead[0]) if dead else 0

    async def succeeded_runs(self, since: Any, until: Any) -> int:
        async with await self._db() as conn:
            row = await (
                await conn.execute(
                    "SELECT count(*) FROM agent.runs WHERE status = 'succeeded' AND end_time >= %s AND end_time < %s",
                    (since, until),
                )
            ).fetchone()
        return int(row[0]) if row else 0

    async def wait_delivered(self, since: Any, until: Any, timeout_s: float) -> tuple[float, list[str], list[str], int]:
        """Polls until every succeeded run of the window has its memory write and trace (the
        outbox delivered), or the timeout; returns the wait and what is still missing."""
        started = time.monotonic()
        while True:
            try:
                memory, traces, dead = await self.lost_hand_offs(since, until)
            except psycopg.Error:
                memory, traces, dead = ["?"], ["?"], 0
            if (not memory and not traces) or time.monotonic() - started > timeout_s:
                return time.monotonic() - started, memory, traces, dead
            await asyncio.sleep(1.0)
