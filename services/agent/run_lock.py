"""One turn at a time per session, across replicas: a Postgres session-level advisory
lock held on a dedicated connection for the whole turn."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.agent import metrics
from services.common.errors import Aborted, Unavailable
from services.common.logging import get_logger

log = get_logger(__name__)

TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
UNLOCK = "SELECT pg_advisory_unlock(%s)"


def lock_key(session_id: str) -> int:
    digest = hashlib.blake2b(f"agent-run:{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class RunLocks:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        key = lock_key(session_id)
        try:
            conn = await self._pool.getconn()
        except PoolTimeout:
            raise Unavailable("the agent is at capacity; try again shortly", reason="AGENT_BUSY") from None
        try:
            row = await (await conn.execute(TRY_LOCK, (key,))).fetchone()
        except BaseException:
            await asyncio.shield(self._discard(conn))
            raise
        if not row or not row[0]:
            await self._pool.putconn(conn)
            metrics.run_lock_conflicts_total.inc()
            raise Aborted(
                "another turn is already running on this session; wait for it to finish", reason="SESSION_BUSY"
            )
        try:
            yield
        finally:
            # Shielded: a cancelled turn must still give the lock back before the
            # connection returns to the pool.
            await asyncio.shield(self._unlock(conn, key))

    async def _unlock(self, conn: AsyncConnection, key: int) -> None:
        try:
            await conn.execute(UNLOCK, (key,))
        except Exception as exc:
            log.warning("run_lock_release_failed", error=repr(exc))
            await self._discard(conn)
            return
        await self._pool.putconn(conn)

    async def _discard(self, conn: AsyncConnection) -> None:
        # Ending the database session is what finally frees a lock we could not release.
        await conn.close()
        await self._pool.putconn(conn)

    async def close(self) -> None:
        await self._pool.close()
