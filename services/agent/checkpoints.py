"""Conversation state in Postgres: LangGraph's checkpointer in the `agent` schema.

The schema holds LangGraph's tables (created by its own `setup()`) and the run tables
(`run_schema.MIGRATIONS`); both are brought up to date under one advisory lock, so two
replicas starting together do not race on DDL.
"""

from __future__ import annotations

from langchain_core.messages import AnyMessage
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from runtime.logging import get_logger
from services.agent.pg_pool import ensure_schema, open_pool
from services.agent.run_store import RunStore
from services.agent.settings import AgentSettings

log = get_logger(__name__)

SCHEMA = "agent"

# LangGraph writes a full checkpoint (with the whole message list) per turn and never
# deletes one: a conversation's storage would grow with the square of its turns. After each
# turn the thread is pruned to its latest checkpoint by PRUNE_TO_LATEST; a sweeper catches
# threads a failed prune left behind, and databases from before pruning, with the library's
# own `aprune(keep_latest)`.
#
# PRUNE_TO_LATEST is keep_latest for the threads this agent writes (one root namespace, no
# subgraphs, no Send, no delta channels: services/agent/graph.py) in one statement: the
# library's general version takes a dozen round trips per thread (about a tenth of the
# agent's CPU per turn, profiled). Like it, it reads one snapshot, so a checkpoint saved
# meanwhile is neither seen nor touched, and it frees only blob versions that a deleted
# checkpoint referenced and the kept one does not (never blobs of a save in flight).
PRUNE_TO_LATEST = (
    "WITH head AS (SELECT checkpoint_id, checkpoint -> 'channel_versions' AS versions FROM checkpoints"
    " WHERE thread_id = %(thread)s AND checkpoint_ns = '' ORDER BY checkpoint_id DESC LIMIT 1),"
    " old AS (DELETE FROM checkpoints c USING head WHERE c.thread_id = %(thread)s AND c.checkpoint_ns = ''"
    " AND c.checkpoint_id <> head.checkpoint_id"
    " RETURNING c.checkpoint_id, c.checkpoint -> 'channel_versions' AS versions),"
    " freed AS (SELECT DISTINCT v.key AS channel, v.value AS version FROM old"
    " CROSS JOIN LATERAL jsonb_each_text(old.versions) AS v),"
    " writes AS (DELETE FROM checkpoint_writes w WHERE w.thread_id = %(thread)s AND w.checkpoint_ns = ''"
    " AND w.checkpoint_id IN (SELECT checkpoint_id FROM old)),"
    " blobs AS (DELETE FROM checkpoint_blobs b USING freed, head WHERE b.thread_id = %(thread)s"
    " AND b.checkpoint_ns = '' AND b.channel = freed.channel AND b.version = freed.version"
    " AND (head.versions ->> freed.channel) IS DISTINCT FROM freed.version),"
    " orphaned AS (UPDATE checkpoints k SET parent_checkpoint_id = NULL FROM head"
    " WHERE k.thread_id = %(thread)s AND k.checkpoint_ns = '' AND k.checkpoint_id = head.checkpoint_id"
    " AND k.parent_checkpoint_id IN (SELECT checkpoint_id FROM old))"
    " SELECT count(*) AS pruned FROM old"
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


class _NoLock:
    """Stands in for the saver's `lock` (a public attribute): the upstream saver takes one
    process-wide asyncio.Lock around every query, which a single shared connection needs;
    on a pool each query has its own connection, so the lock would only serialise
    unrelated sessions' turns (tested: tests/agent/test_checkpointer.py)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def pooled_saver(pool: AsyncConnectionPool) -> AsyncPostgresSaver:
    saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
    saver.lock = _NoLock()  # type: ignore[assignment]
    return saver


class Checkpoints:
    def __init__(self, pool: AsyncConnectionPool, saver: AsyncPostgresSaver) -> None:
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
        saver = pooled_saver(pool)
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

    async def prune(self, thread_id: str) -> None:
        """Keeps only the thread's latest checkpoint (and what it needs): after each turn."""
        async with self.pool.connection() as conn:
            await conn.execute(PRUNE_TO_LATEST, {"thread": thread_id})

    async def prune_overgrown(self, limit: int = 100) -> int:
        """The sweeper's share: threads left with older checkpoints are pruned by the
        library's general keep_latest; returns how many."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(OVERGROWN_THREADS, (1, limit))).fetchall()
        for row in rows:
            await self.saver.aprune([row["thread_id"]], strategy="keep_latest")
        return len(rows)

    async def stored_bytes(self, thread_id: str) -> int:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(THREAD_BYTES, {"thread": thread_id})).fetchone()
        return int(row["bytes"]) if row else 0

    async def delete(self, thread_id: str) -> None:
        await self.saver.adelete_thread(thread_id)

    async def close(self) -> None:
        await self.pool.close()
