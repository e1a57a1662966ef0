"""One turn at a time per session, across replicas: a Postgres session-level advisory
lock held for the whole turn.

A connection per running turn would cap a replica at its pool size (turns queue for a
connection long before the CPU is busy), so the locks live on a few long-lived
connections ("lanes") instead: a session's key always maps to the same lane, and one
connection can hold any number of advisory locks. Session-level advisory locks are
re-entrant within one database session, so two turns of this replica on the same lane
would both get the lock: the replica therefore also refuses a session it is already
running (the in-process set), and Postgres refuses it when another replica holds it.

If a lane's connection dies, Postgres drops every lock it held; the lane reconnects on
next use and the turns that were running finish unprotected (logged).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import psycopg

from services.agent import metrics
from services.common.errors import Aborted, Unavailable
from services.common.logging import get_logger

log = get_logger(__name__)

TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
UNLOCK = "SELECT pg_advisory_unlock(%s)"

Connect = Callable[[], Awaitable[psycopg.AsyncConnection]]


def lock_key(session_id: str) -> int:
    digest = hashlib.blake2b(f"agent-run:{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _Lane:
    def __init__(self, connect: Connect, timeout_s: float) -> None:
        self._connect = connect
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection | None = None
        # psycopg serialises statements on a connection; this lock also covers reconnecting.
        self._lock = asyncio.Lock()

    async def _execute(self, statement: str, key: int) -> bool:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                if self._conn is not None:
                    log.warning("run_lock_lane_reconnecting")
                self._conn = await asyncio.wait_for(self._connect(), self._timeout_s)
            try:
                row = await (await self._conn.execute(statement, (key,))).fetchone()
            except psycopg.Error:
                # The connection is gone or unusable; Postgres has dropped its locks.
                await self._conn.close()
                self._conn = None
                raise
            return bool(row and row[0])

    async def try_lock(self, key: int) -> bool:
        return await self._execute(TRY_LOCK, key)

    async def unlock(self, key: int) -> None:
        try:
            await self._execute(UNLOCK, key)
        except psycopg.Error as exc:
            log.warning("run_lock_release_failed", error=repr(exc))

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


class RunLocks:
    def __init__(self, connect: Connect, *, lanes: int, timeout_s: float) -> None:
        self._lanes = [_Lane(connect, timeout_s) for _ in range(lanes)]
        self._running: set[str] = set()

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        if session_id in self._running:
            raise self._busy()
        key = lock_key(session_id)
        lane = self._lanes[key % len(self._lanes)]
        # Claimed before the first await, so a concurrent turn of this replica is refused.
        self._running.add(session_id)
        try:
            acquired = await lane.try_lock(key)
        except (psycopg.Error, TimeoutError):
            self._running.discard(session_id)
            raise Unavailable("the agent cannot reach its database; try again shortly", reason="AGENT_BUSY") from None
        except BaseException:
            self._running.discard(session_id)
            raise
        if not acquired:
            self._running.discard(session_id)
            raise self._busy()
        try:
            yield
        finally:
            # Shielded: a cancelled turn must still give the lock back.
            await asyncio.shield(lane.unlock(key))
            self._running.discard(session_id)

    @staticmethod
    def _busy() -> Aborted:
        metrics.run_lock_conflicts_total.inc()
        return Aborted("another turn is already running on this session; wait for it to finish", reason="SESSION_BUSY")

    async def close(self) -> None:
        for lane in self._lanes:
            await lane.close()
