"""The memory service's table (schema `memory`) and every query on it.

Every query names the owner: another user's memory is indistinguishable from a missing
one. Vectors travel in pgvector's binary format (the asyncpg codec is registered on
every pooled connection). Writes for one user happen inside `locked_user()`, which holds
a transaction-scoped advisory lock, so concurrent adds (in any replica) take turns.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from pgvector.asyncpg import register_vector
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runtime.database import autocommit
from runtime.erasure import add_counts
from services.memory.facts import normalise_fact
from services.memory.memory_rows import (
    HistoryRow,
    MemoryRow,
    NewMemory,
    ScoredMemory,
    SearchTuning,
    history_row,
    memory_row,
    session_uuid,
)
from services.memory.metrics import memory_search_seconds
from services.memory.user_memories import GET_LIVE, UserMemories

LOCK_USER = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
SEARCH = text(
    "SELECT id, user_id, text, session_id, created_at, updated_at, expire_time, score"
    " FROM memory_search(:user_id, :query, :limit, :min_score, :exact_max_rows,"
    " :ef_search, :iterative_scan, :max_scan_tuples)"
)
EXACT_SEARCH = text(
    "SELECT id, user_id, text, session_id, created_at, updated_at, expire_time,"
    " 1 - (embedding <=> :query) AS score FROM memories"
    " WHERE user_id = :user_id AND (expire_time IS NULL OR expire_time > clock_timestamp())"
    " ORDER BY embedding <=> :query, id LIMIT :limit"
)
INSERT_MANY = text(
    "INSERT INTO memories (id, user_id, text, normalized, embedding, session_id)"
    " VALUES (:id, :user_id, :text, :normalized, :embedding, :session_id)"
    " ON CONFLICT (user_id, normalized) DO NOTHING"
)
# Expired memories go with their history: inside a writer's lock for that user (so dedup
# and the quota never see them), and by the sweeper for everyone (SKIP LOCKED: every
# replica can sweep at once without waiting on each other).
PURGE_EXPIRED_OF_USER = text(
    "WITH gone AS (DELETE FROM memories WHERE user_id = :user_id AND expire_time <= clock_timestamp()"
    " RETURNING id, user_id)"
    " DELETE FROM memory_history h USING gone g WHERE h.memory_id = g.id AND h.user_id = g.user_id"
)
SWEEP_EXPIRED = text(
    "WITH expired AS (SELECT id FROM memories WHERE expire_time <= clock_timestamp()"
    "  ORDER BY expire_time LIMIT :limit FOR UPDATE SKIP LOCKED),"
    " gone AS (DELETE FROM memories m USING expired e WHERE m.id = e.id RETURNING m.id, m.user_id),"
    " history AS (DELETE FROM memory_history h USING gone g WHERE h.memory_id = g.id AND h.user_id = g.user_id)"
    " SELECT count(*) FROM gone"
)
SEEN_KEY = text("SELECT 1 FROM add_requests WHERE user_id = :user_id AND idempotency_key = :key")
SWEEP_KEYS = text("DELETE FROM add_requests WHERE created_at < clock_timestamp() - make_interval(secs => :ttl_s)")
LIST_FIRST_PAGE = text(
    "SELECT id, user_id, text, session_id, created_at, updated_at, expire_time FROM memories"
    " WHERE user_id = :user_id AND (expire_time IS NULL OR expire_time > clock_timestamp())"
    " AND (CAST(:session_id AS uuid) IS NULL OR session_id = CAST(:session_id AS uuid))"
    " ORDER BY created_at DESC, id DESC LIMIT :limit"
)
LIST_AFTER = text(
    "SELECT id, user_id, text, session_id, created_at, updated_at, expire_time FROM memories"
    " WHERE user_id = :user_id AND (expire_time IS NULL OR expire_time > clock_timestamp())"
    " AND (CAST(:session_id AS uuid) IS NULL OR session_id = CAST(:session_id AS uuid))"
    " AND (created_at, id) < (:created_at, :id) ORDER BY created_at DESC, id DESC LIMIT :limit"
)
HISTORY_FIRST_PAGE = text(
    "SELECT id, action, text, previous_text, session_id, source, created_at FROM memory_history"
    " WHERE user_id = :user_id AND memory_id = :memory_id ORDER BY created_at, id LIMIT :limit"
)
HISTORY_AFTER = text(
    "SELECT id, action, text, previous_text, session_id, source, created_at FROM memory_history"
    " WHERE user_id = :user_id AND memory_id = :memory_id AND (created_at, id) > (:created_at, :id)"
    " ORDER BY created_at, id LIMIT :limit"
)
# Account erasure (runtime.erasure): totals kept under the erasure id.
OPEN_ERASURE = text("INSERT INTO erasures (erasure_id) VALUES (:erasure_id) ON CONFLICT DO NOTHING")
LOCK_ERASURE = text("SELECT counts FROM erasures WHERE erasure_id = :erasure_id FOR UPDATE")
ERASE_USER = {
    "add_requests": text("DELETE FROM add_requests WHERE user_id = :user_id"),
    "memory_history": text("DELETE FROM memory_history WHERE user_id = :user_id"),
    "memories": text("DELETE FROM memories WHERE user_id = :user_id"),
}
RECORD_ERASURE = text(
    "UPDATE erasures SET counts = CAST(:counts AS jsonb), erased_at = clock_timestamp() WHERE erasure_id = :erasure_id"
)
EMBEDDING_DIM = text(
    "SELECT atttypmod FROM pg_attribute"
    " WHERE attrelid = 'memory.memories'::regclass AND attname = 'embedding' AND NOT attisdropped"
)


def register_vector_codec(engine: AsyncEngine) -> None:
    """Every new pooled connection learns pgvector's binary format (after the migration
    created the extension; connections opened before that are disposed by the caller)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.run_async(register_vector)


class MemoryStore:
    def __init__(self, engine: AsyncEngine, tuning: SearchTuning | None = None) -> None:
        self._engine = engine
        self._tuning = tuning or SearchTuning()

    async def embedding_dim(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(EMBEDDING_DIM)).scalar_one())

    @asynccontextmanager
    async def locked_user(
        self, user_id: str, *, max_memories: int | None = None, new_expire_time: datetime | None = None
    ) -> AsyncIterator[UserMemories]:
        """A transaction holding the user's advisory lock: everything in it commits or
        nothing does, and no other writer of this user's memories runs meanwhile."""
        async with self._engine.begin() as conn:
            await conn.execute(LOCK_USER, {"key": f"memory:{user_id}"})
            # Expired memories are gone before anything compares with or counts them.
            await conn.execute(PURGE_EXPIRED_OF_USER, {"user_id": uuid.UUID(user_id)})
            yield UserMemories(conn, self, uuid.UUID(user_id), max_memories, new_expire_time)

    async def search(
        self, user_id: str, embedding: Sequence[float], *, limit: int, min_score: float = 0.0
    ) -> list[ScoredMemory]:
        """The user's `limit` memories nearest to `embedding` with score >= min_score, best
        first; one round trip. Benchmarks call this with precomputed vectors."""
        started = time.perf_counter()
        # The function's set_config(..., true) lasts exactly the statement's own implicit transaction.
        async with autocommit(self._engine) as conn:
            hits = await self.search_on(conn, user_id, embedding, limit=limit, min_score=min_score)
        memory_search_seconds.observe(time.perf_counter() - started)
        return hits

    async def search_on(
        self, conn: AsyncConnection, user_id: str, embedding: Sequence[float], *, limit: int, min_score: float
    ) -> list[ScoredMemory]:
        params = {
            "user_id": uuid.UUID(user_id),
            "query": embedding,
            "limit": limit,
            "min_score": min_score,
            "exact_max_rows": self._tuning.exact_max_rows,
            "ef_search": max(self._tuning.ef_search, limit),
            "iterative_scan": self._tuning.iterative_scan,
            "max_scan_tuples": self._tuning.max_scan_tuples,
        }
        rows = (await conn.execute(SEARCH, params)).all()
        return [ScoredMemory(memory_row(row), float(row.score)) for row in rows]

    async def exact_search(self, user_id: str, embedding: Sequence[float], *, limit: int) -> list[ScoredMemory]:
        """Brute force over the user's rows (never HNSW): the ground truth for recall checks."""
        async with self._engine.begin() as conn:
            await conn.execute(text("SET LOCAL enable_indexscan = off"))
            rows = (
                await conn.execute(EXACT_SEARCH, {"user_id": uuid.UUID(user_id), "query": embedding, "limit": limit})
            ).all()
        return [ScoredMemory(memory_row(row), float(row.score)) for row in rows]

    async def insert_many(self, memories: Sequence[NewMemory], *, chunk_size: int = 1000) -> None:
        """Bulk load for benchmarks and tests: no LLM, exact duplicates skipped."""
        for start in range(0, len(memories), chunk_size):
            chunk = memories[start : start + chunk_size]
            params = [
                {
                    "id": uuid.uuid4(),
                    "user_id": uuid.UUID(m.user_id),
                    "text": m.text,
                    "normalized": normalise_fact(m.text),
                    "embedding": m.embedding,
                    "session_id": session_uuid(m.session_id),
                }
                for m in chunk
            ]
            async with self._engine.begin() as conn:
                await conn.execute(INSERT_MANY, params)

    async def list(
        self,
        user_id: str,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        session_id: uuid.UUID | None = None,
    ) -> list[MemoryRow]:
        params: dict[str, Any] = {"user_id": uuid.UUID(user_id), "limit": limit, "session_id": session_id}
        query = LIST_FIRST_PAGE
        if after is not None:
            query = LIST_AFTER
            params.update(created_at=after[0], id=after[1])
        async with autocommit(self._engine) as conn:
            return [memory_row(row) for row in (await conn.execute(query, params)).all()]

    async def delete(self, user_id: str, memory_id: uuid.UUID) -> bool:
        async with self.locked_user(user_id) as memories:
            return await memories.erase(str(memory_id)) is not None

    async def history(
        self, user_id: str, memory_id: uuid.UUID, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[HistoryRow]:
        params: dict[str, Any] = {"user_id": uuid.UUID(user_id), "memory_id": memory_id, "limit": limit}
        query = HISTORY_FIRST_PAGE
        if after is not None:
            query = HISTORY_AFTER
            params.update(created_at=after[0], id=after[1])
        async with autocommit(self._engine) as conn:
            return [history_row(row) for row in (await conn.execute(query, params)).all()]

    async def key_used(self, user_id: str, key: str) -> bool:
        async with autocommit(self._engine) as conn:
            return (await conn.execute(SEEN_KEY, {"user_id": uuid.UUID(user_id), "key": key})).first() is not None

    async def sweep_keys(self, ttl_s: float) -> int:
        async with self._engine.begin() as conn:
            return int((await conn.execute(SWEEP_KEYS, {"ttl_s": ttl_s})).rowcount)

    async def exists(self, user_id: str, memory_id: uuid.UUID) -> bool:
        async with autocommit(self._engine) as conn:
            row = (await conn.execute(GET_LIVE, {"id": memory_id, "user_id": uuid.UUID(user_id)})).first()
        return row is not None

    async def sweep_expired(self, limit: int) -> int:
        """Deletes up to `limit` expired memories (of any user) with their history."""
        async with self._engine.begin() as conn:
            return int((await conn.execute(SWEEP_EXPIRED, {"limit": limit})).scalar_one())

    async def erase_user(self, erasure_id: str, user_id: str) -> dict[str, int]:
        """Account deletion: every row of the user, expired ones included (counted, unlike
        `locked_user`, which purges them first); the running totals of this erasure."""
        owner, erasure = uuid.UUID(user_id), uuid.UUID(erasure_id)
        async with self._engine.begin() as conn:
            # The writers' lock: an AddMemories in flight lands before the erasure, not after.
            await conn.execute(LOCK_USER, {"key": f"memory:{user_id}"})
            await conn.execute(OPEN_ERASURE, {"erasure_id": erasure})
            earlier = (await conn.execute(LOCK_ERASURE, {"erasure_id": erasure})).scalar_one()
            erased = {
                table: int((await conn.execute(query, {"user_id": owner})).rowcount)
                for table, query in ERASE_USER.items()
            }
            counts = add_counts(earlier, erased)
            await conn.execute(RECORD_ERASURE, {"erasure_id": erasure, "counts": json.dumps(counts)})
        return counts

    async def delete_all(self, user_id: str) -> int:
        # Under the user's lock, so an AddMemories in flight either lands before (and is
        # deleted) or after (and is kept, as a fact stated after "forget me").
        async with self.locked_user(user_id) as memories:
            return await memories.delete_all()
