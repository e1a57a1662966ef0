"""Conversation state in Postgres: LangGraph's checkpointer in the `agent` schema.

The schema holds LangGraph's tables (created by its own `setup()`) and the run tables
(`run_store.MIGRATIONS`); both are brought up to date under one advisory lock, so two
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
# turn the thread is pruned to its latest checkpoint with the library's own `aprune`
# (keep_latest: one snapshot, so what a run saves meanwhile is neither seen nor deleted); a
# sweeper catches threads a failed prune left behind, and databases from before pruning.
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
        """Keeps only the thread's latest checkpoint (and what it needs)."""
        await self.saver.aprune([thread_id], strategy="keep_latest")

    async def prune_overgrown(self, limit: int = 100) -> int:
        """The sweeper's share: threads left with older checkpoints are pruned; returns how many."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(OVERGROWN_THREADS, (1, limit))).fetchall()
        for row in rows:
            await self.prune(row["thread_id"])
        return len(rows)

    async def stored_bytes(self, thread_id: str) -> int:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(THREAD_BYTES, {"thread": thread_id})).fetchone()
        return int(row["bytes"]) if row else 0

    async def delete(self, thread_id: str) -> None:
        await self.saver.adelete_thread(thread_id)

    async def close(self) -> None:
        await self.pool.close()
