"""Writing one user's memories: every change runs inside the transaction that holds the
user's advisory lock (`MemoryStore.locked_user`), with its history entry and the quota check."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.memory.facts import normalise_fact
from services.memory.memory_rows import MemoryRow, ScoredMemory, memory_row, session_uuid

if TYPE_CHECKING:
    from services.memory.store import MemoryStore

FIND_NORMALISED = text(
    "SELECT id, user_id, text, session_id, created_at, updated_at, expire_time FROM memories"
    " WHERE user_id = :user_id AND normalized = :normalized"
)
INSERT = text(
    "INSERT INTO memories (id, user_id, text, normalized, embedding, session_id, expire_time)"
    " VALUES (:id, :user_id, :text, :normalized, :embedding, :session_id, :expire_time)"
    " ON CONFLICT (user_id, normalized) DO NOTHING"
    " RETURNING id, user_id, text, session_id, created_at, updated_at, expire_time"
)
UPDATE = text(
    "UPDATE memories SET text = :text, normalized = :normalized, embedding = :embedding,"
    " session_id = COALESCE(:session_id, session_id), updated_at = clock_timestamp()"
    " WHERE id = :id AND user_id = :user_id"
    " RETURNING id, user_id, text, session_id, created_at, updated_at, expire_time"
)
# UpdateMemory: each field changes only when named; expire_time may become NULL (never).
UPDATE_FIELDS = text(
    "UPDATE memories SET"
    " text = CASE WHEN :set_text THEN :text ELSE text END,"
    " normalized = CASE WHEN :set_text THEN :normalized ELSE normalized END,"
    " embedding = CASE WHEN :set_text THEN CAST(:embedding AS public.vector) ELSE embedding END,"
    " expire_time = CASE WHEN :set_expire THEN CAST(:expire_time AS timestamptz) ELSE expire_time END,"
    " updated_at = clock_timestamp()"
    " WHERE id = :id AND user_id = :user_id AND (expire_time IS NULL OR expire_time > clock_timestamp())"
    " RETURNING id, user_id, text, session_id, created_at, updated_at, expire_time"
)
GET_LIVE = text(
    "SELECT id, user_id, text, session_id, created_at, updated_at, expire_time FROM memories"
    " WHERE id = :id AND user_id = :user_id AND (expire_time IS NULL OR expire_time > clock_timestamp())"
)
DELETE = text(
    "DELETE FROM memories WHERE id = :id AND user_id = :user_id"
    " RETURNING id, user_id, text, session_id, created_at, updated_at, expire_time"
)
DELETE_ALL = text("DELETE FROM memories WHERE user_id = :user_id")
DELETE_HISTORY = text("DELETE FROM memory_history WHERE user_id = :user_id AND memory_id = :memory_id")
DELETE_ALL_HISTORY = text("DELETE FROM memory_history WHERE user_id = :user_id")
CLAIM_KEY = text(
    "INSERT INTO add_requests (user_id, idempotency_key) VALUES (:user_id, :key)"
    " ON CONFLICT DO NOTHING RETURNING idempotency_key"
)
DELETE_ALL_KEYS = text("DELETE FROM add_requests WHERE user_id = :user_id")
COUNT_USER = text("SELECT count(*) FROM memories WHERE user_id = :user_id")
INSERT_HISTORY = text(
    "INSERT INTO memory_history (id, memory_id, user_id, action, text, previous_text, session_id, source)"
    " VALUES (:id, :memory_id, :user_id, :action, :text, :previous_text, :session_id, :source)"
)


class MemoryQuotaExceeded(Exception):
    """An insert would take the user past `max_memories`; the transaction is rolled back."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} memories per user")
        self.limit = limit


class UserMemories:
    """One user's memories inside a transaction that holds the user's lock."""

    def __init__(
        self,
        conn: AsyncConnection,
        store: MemoryStore,
        user_id: uuid.UUID,
        max_memories: int | None = None,
        new_expire_time: datetime | None = None,
    ) -> None:
        self._conn = conn
        self._store = store
        self.user_id = user_id
        self._max_memories = max_memories
        # When the memories this transaction adds expire (AddMemories' expire_time).
        self._new_expire_time = new_expire_time
        # Counted once, at the first insert, then kept up to date: exact, because every
        # writer of this user holds the same lock.
        self._count: int | None = None

    async def _check_quota(self) -> None:
        if self._max_memories is None:
            return
        if self._count is None:
            self._count = int((await self._conn.execute(COUNT_USER, {"user_id": self.user_id})).scalar_one())
        if self._count >= self._max_memories:
            raise MemoryQuotaExceeded(self._max_memories)

    async def find_normalised(self, normalized: str) -> MemoryRow | None:
        params = {"user_id": self.user_id, "normalized": normalized}
        row = (await self._conn.execute(FIND_NORMALISED, params)).first()
        return memory_row(row) if row else None

    async def nearest(self, embedding: Sequence[float], limit: int) -> list[ScoredMemory]:
        return await self._store.search_on(self._conn, str(self.user_id), embedding, limit=limit, min_score=0.0)

    async def insert(
        self, text_: str, embedding: Sequence[float], session_id: str, expire_time: datetime | None = None
    ) -> MemoryRow | None:
        """The new row, or None when an equal fact already exists; MemoryQuotaExceeded when
        the user already has their maximum."""
        await self._check_quota()
        params = {
            "id": uuid.uuid4(),
            "user_id": self.user_id,
            "text": text_,
            "normalized": normalise_fact(text_),
            "embedding": embedding,
            "session_id": session_uuid(session_id),
            "expire_time": expire_time if expire_time is not None else self._new_expire_time,
        }
        row = (await self._conn.execute(INSERT, params)).first()
        if row is not None and self._count is not None:
            self._count += 1
        return memory_row(row) if row else None

    async def update(self, memory_id: str, text_: str, embedding: Sequence[float], session_id: str) -> MemoryRow | None:
        params = {
            "id": uuid.UUID(memory_id),
            "user_id": self.user_id,
            "text": text_,
            "normalized": normalise_fact(text_),
            "embedding": embedding,
            "session_id": session_uuid(session_id),
        }
        row = (await self._conn.execute(UPDATE, params)).first()
        return memory_row(row) if row else None

    async def delete(self, memory_id: str) -> MemoryRow | None:
        row = (await self._conn.execute(DELETE, {"id": uuid.UUID(memory_id), "user_id": self.user_id})).first()
        if row is not None and self._count is not None:
            self._count -= 1
        return memory_row(row) if row else None

    async def claim(self, key: str) -> bool:
        """Records an idempotency key in this transaction; False when it was already used."""
        row = (await self._conn.execute(CLAIM_KEY, {"user_id": self.user_id, "key": key})).first()
        return row is not None

    async def delete_all(self) -> int:
        await self._conn.execute(DELETE_ALL_KEYS, {"user_id": self.user_id})
        await self._conn.execute(DELETE_ALL_HISTORY, {"user_id": self.user_id})
        return int((await self._conn.execute(DELETE_ALL, {"user_id": self.user_id})).rowcount)

    async def get(self, memory_id: str) -> MemoryRow | None:
        row = (await self._conn.execute(GET_LIVE, {"id": uuid.UUID(memory_id), "user_id": self.user_id})).first()
        return memory_row(row) if row else None

    async def update_fields(
        self,
        memory_id: str,
        *,
        text_: str | None,
        embedding: Sequence[float] | None,
        set_expire: bool,
        expire_time: datetime | None,
    ) -> MemoryRow | None:
        """UpdateMemory's change; the caller has checked that no other memory says `text_`."""
        params = {
            "id": uuid.UUID(memory_id),
            "user_id": self.user_id,
            "set_text": text_ is not None,
            "text": text_ or "",
            "normalized": normalise_fact(text_) if text_ is not None else "",
            "embedding": embedding,
            "set_expire": set_expire,
            "expire_time": expire_time,
        }
        row = (await self._conn.execute(UPDATE_FIELDS, params)).first()
        return memory_row(row) if row else None

    async def erase(self, memory_id: str) -> MemoryRow | None:
        """Deletes a memory and its history (the user asked for it to be gone)."""
        row = await self.delete(memory_id)
        if row is not None:
            params = {"user_id": self.user_id, "memory_id": uuid.UUID(memory_id)}
            await self._conn.execute(DELETE_HISTORY, params)
        return row

    async def record(
        self, action: str, memory: MemoryRow, *, previous_text: str = "", session_id: str = "", source: str
    ) -> None:
        """One history entry, in the same transaction as the change it describes."""
        params = {
            "id": uuid.uuid4(),
            "memory_id": uuid.UUID(memory.id),
            "user_id": self.user_id,
            "action": action,
            "text": memory.text,
            "previous_text": previous_text,
            "session_id": session_uuid(session_id),
            "source": source,
        }
        await self._conn.execute(INSERT_HISTORY, params)
