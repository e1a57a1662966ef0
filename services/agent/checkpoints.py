"""Conversation state in Postgres: LangGraph's checkpointer in the `agent` schema.

The schema holds LangGraph's tables (created by its own `setup()`) and the run tables
(`run_store.MIGRATIONS`); both are brought up to date under one advisory lock, so two
replicas starting together do not race on DDL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langchain_core.messages import AnyMessage
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from services.agent.pg_pool import ensure_schema, open_pool
from services.agent.run_store import RunStore
from services.agent.settings import AgentSettings
from services.common.logging import get_logger

log = get_logger(__name__)

SCHEMA = "agent"

# LangGraph writes a full checkpoint (with the whole message list) per turn and never
# deletes one: a conversation's storage would grow with the square of its turns. After a
# turn, all but the newest `keep` checkpoints of the thread go, with the writes and the
# channel blobs only they used. A paused run's checkpoint is the newest: never pruned.
PRUNE_CHECKPOINTS = (
    "DELETE FROM checkpoints WHERE thread_id = %(thread)s AND checkpoint_ns = '' AND checkpoint_id NOT IN"
    " (SELECT checkpoint_id FROM checkpoints WHERE thread_id = %(thread)s AND checkpoint_ns = ''"
    " ORDER BY checkpoint_id DESC LIMIT %(keep)s)"
)
# Writes and blobs go only when older than everything the kept checkpoints use: a turn
# writing its checkpoint meanwhile puts newer ids and versions (both sort in time order),
# which these never touch.
PRUNE_WRITES = (
    "DELETE FROM checkpoint_writes w WHERE w.thread_id = %(thread)s AND w.checkpoint_ns = ''"
    " AND w.checkpoint_id < (SELECT min(checkpoint_id) FROM checkpoints WHERE thread_id = %(thread)s"
    " AND checkpoint_ns = '')"
)
PRUNE_BLOBS = (
    "DELETE FROM checkpoint_blobs b WHERE b.thread_id = %(thread)s AND b.checkpoint_ns = ''"
    " AND b.version < (SELECT min(c.checkpoint -> 'channel_versions' ->> b.channel) FROM checkpoints c"
    " WHERE c.thread_id = %(thread)s AND c.checkpoint_ns = '')"
)
OVERGROWN_THREADS = (
    "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' GROUP BY thread_id HAVING count(*) > %s LIMIT %s"
)
THREAD_BYTES = (
    "SELECT coalesce((SELECT sum(pg_column_size(c.*)) FROM checkpoints c WHERE thread_id = %(thread)s), 0)"
    " + coalesce((SELECT sum(pg_column_size(b.*)) FROM checkpoint_blobs b WHERE thread_id = %(thread)s), 0)"
    " + coalesce((SELECT sum(pg_column_size(w.*)) FROM checkpoint_writes w WHERE thread_id = %(thread)s), 0)"
    " AS bytes"
)
SETUP_LOCK = "SELECT pg_advisory_lock(hashtext('agent:checkpointer-setup'))"
SETUP_UNLOCK = "SELECT pg_advisory_unlock(hashtext('agent:checkpointer-setup'))"


class PooledPostgresSaver(AsyncPostgresSaver):
    """The upstream saver runs every query under one process-wide asyncio.Lock, which a
    single shared connection needs; on a pool each query has its own connection, so
    the lock would only serialise unrelated sessions' turns."""

    conn: AsyncConnectionPool

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        async with self.conn.connection() as conn:
            if pipeline:
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            else:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur


class Checkpoints:
    def __init__(self, pool: AsyncConnectionPool, saver: PooledPostgresSaver) -> None:
        self.pool = pool
        self.saver = saver

    @classmethod
    async def open(cls, url: str, settings: AgentSettings) -> Checkpoints:
        await ensure_schema(url, SCHEMA)
        pool = await open_pool(
            url,
            name="agent-checkpoints",
            min_size=settings.checkpoint_pool_min_size,
            max_size=settings.checkpoint_pool_max_size,
            timeout_s=settings.db_pool_timeout_s,
            search_path=SCHEMA,
            bounds=settings,
            row_factory=dict_row,
        )
        saver = PooledPostgresSaver(pool)  # type: ignore[arg-type]
        async with pool.connection() as conn:
            # Waiting for another replica's setup is not a stalled statement.
            await conn.execute("SET statement_timeout = 0")
            conn.call_timeout_s = None  # type: ignore[attr-defined]
            await conn.execute(SETUP_LOCK)
            try:
                await saver.setup()
                await RunStore(pool, lease_s=settings.run_lease_s).migrate()
            finally:
                await conn.execute(SETUP_UNLOCK)
                await conn.execute("RESET statement_timeout")
                del conn.call_timeout_s  # back to the class's bound
        log.info("checkpointer_ready", schema=SCHEMA)
        return cls(pool, saver)

    async def conversation(self, thread_id: str) -> list[AnyMessage]:
        saved = await self.saver.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        if saved is None:
            return []
        return list(saved.checkpoint["channel_values"].get("messages", []))

    async def prune(self, thread_id: str, keep: int) -> None:
        """Deletes all but the newest `keep` checkpoints of the thread, in one transaction."""
        params = {"thread": thread_id, "keep": keep}
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(PRUNE_CHECKPOINTS, params)
            await conn.execute(PRUNE_WRITES, params)
            await conn.execute(PRUNE_BLOBS, params)

    async def prune_overgrown(self, keep: int, limit: int = 100) -> int:
        """The sweeper's share: threads left with more checkpoints (a database from before
        pruning, a prune that failed) are pruned; returns how many."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(OVERGROWN_THREADS, (keep, limit))).fetchall()
        for row in rows:
            await self.prune(row["thread_id"], keep)
        return len(rows)

    async def stored_bytes(self, thread_id: str) -> int:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(THREAD_BYTES, {"thread": thread_id})).fetchone()
        return int(row["bytes"]) if row else 0

    async def delete(self, thread_id: str) -> None:
        await self.saver.adelete_thread(thread_id)

    async def close(self) -> None:
        await self.pool.close()
