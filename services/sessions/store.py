"""The sessions service's tables (schema `sessions`) and every query on them.

Every query names the owner: a session of another user is indistinguishable from a
missing one. An expired session (`expire_time` passed) is missing too, from the first
second, whether or not the sweeper has deleted it yet.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runtime.database import autocommit
from runtime.erasure import add_counts

# Every read and write of a session skips expired ones: they are gone for their owner
# from the first second, before the sweeper deletes them.
# One clock reading for both times: a new session was never renamed.
INSERT_SESSION = text(
    "INSERT INTO sessions (id, user_id, name, created_at, updated_at, expire_time)"
    " SELECT :id, :user_id, :name, t.now, t.now, :expire_time FROM (SELECT clock_timestamp() AS now) AS t"
    " RETURNING id, user_id, name, created_at, updated_at, expire_time"
)
GET_SESSION = text(
    "SELECT id, user_id, name, created_at, updated_at, expire_time FROM sessions"
    " WHERE id = :id AND user_id = :user_id"
    " AND (expire_time IS NULL OR expire_time > clock_timestamp())"
)
# Each field changes only when named (:set_name / :set_expire); expire_time may become NULL.
UPDATE_SESSION = text(
    "UPDATE sessions SET name = CASE WHEN :set_name THEN :name ELSE name END,"
    " expire_time = CASE WHEN :set_expire THEN CAST(:expire_time AS timestamptz) ELSE expire_time END,"
    " updated_at = clock_timestamp()"
    " WHERE id = :id AND user_id = :user_id"
    " AND (expire_time IS NULL OR expire_time > clock_timestamp())"
    " RETURNING id, user_id, name, created_at, updated_at, expire_time"
)
# Creation takes the owner's lock, so the count below is exact across replicas: two
# creates racing at the quota's edge cannot both pass.
LOCK_OWNER = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
COUNT_SESSIONS = text(
    "SELECT count(*) FROM sessions WHERE user_id = :user_id"
    " AND (expire_time IS NULL OR expire_time > clock_timestamp())"
)
DELETE_SESSION = text(
    "DELETE FROM sessions WHERE id = :id AND user_id = :user_id"
    " AND (expire_time IS NULL OR expire_time > clock_timestamp())"
)
LIST_FIRST_PAGE = text(
    "SELECT id, user_id, name, created_at, updated_at, expire_time FROM sessions WHERE user_id = :user_id"
    " AND (expire_time IS NULL OR expire_time > clock_timestamp())"
    " ORDER BY created_at DESC, id DESC LIMIT :limit"
)
LIST_AFTER = text(
    "SELECT id, user_id, name, created_at, updated_at, expire_time FROM sessions WHERE user_id = :user_id"
    " AND (expire_time IS NULL OR expire_time > clock_timestamp())"
    " AND (created_at, id) < (:created_at, :id) ORDER BY created_at DESC, id DESC LIMIT :limit"
)
# The sweeper records a pending conversation clear per expired session (the row stays,
# invisible to users, until the agent confirms the clear: the row is what lets the agent
# check the session, and the record is what retries survive on); ON CONFLICT lets every
# replica sweep at once.
SWEEP_EXPIRED = text(
    "INSERT INTO conversation_clears (session_id, user_id)"
    " SELECT s.id, s.user_id FROM sessions s WHERE s.expire_time <= clock_timestamp()"
    " AND NOT EXISTS (SELECT 1 FROM conversation_clears c WHERE c.session_id = s.id)"
    " ORDER BY s.expire_time LIMIT :limit ON CONFLICT (session_id) DO NOTHING RETURNING session_id"
)
# For the sweeper's own service token only (through the agent's ownership check).
GET_SESSION_EVEN_EXPIRED = text(
    "SELECT id, user_id, name, created_at, updated_at, expire_time FROM sessions WHERE id = :id AND user_id = :user_id"
)
DUE_CLEARS = text(
    "SELECT session_id, user_id, attempts FROM conversation_clears WHERE next_attempt_at <= clock_timestamp()"
    " ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED"
)
# The conversation is gone: now the expired row and its record go too.
CLEAR_DONE = text(
    "WITH swept AS (DELETE FROM sessions WHERE id = :session_id AND expire_time <= clock_timestamp())"
    " DELETE FROM conversation_clears WHERE session_id = :session_id"
)
CLEAR_FAILED = text(
    "UPDATE conversation_clears SET attempts = attempts + 1, last_error = :error,"
    " next_attempt_at = clock_timestamp() + make_interval(secs => :delay_s) WHERE session_id = :session_id"
)

# Account erasure (runtime.erasure): one transaction per attempt, totals kept
# under the erasure id. Pending clears name expired sessions whose conversations the
# agent has yet to clear: their ids are reported too.
OPEN_ERASURE = text("INSERT INTO erasures (erasure_id) VALUES (:erasure_id) ON CONFLICT DO NOTHING")
LOCK_ERASURE = text("SELECT counts, session_ids FROM erasures WHERE erasure_id = :erasure_id FOR UPDATE")
ERASE_SESSIONS = text("DELETE FROM sessions WHERE user_id = :user_id RETURNING id")
ERASE_CLEARS = text("DELETE FROM conversation_clears WHERE user_id = :user_id RETURNING session_id")
RECORD_ERASURE = text(
    "UPDATE erasures SET counts = CAST(:counts AS jsonb), session_ids = :session_ids, erased_at = clock_timestamp()"
    " WHERE erasure_id = :erasure_id"
)


@dataclass(frozen=True)
class SessionRow:
    id: str
    user_id: str
    name: str
    created_at: datetime
    updated_at: datetime
    expire_time: datetime | None = None


@dataclass(frozen=True)
class PendingClear:
    session_id: str
    user_id: str
    attempts: int


def _row(row) -> SessionRow:
    return SessionRow(str(row.id), str(row.user_id), row.name, row.created_at, row.updated_at, row.expire_time)


class SessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self, user_id: str, name: str, *, max_sessions: int, expire_time: datetime | None = None
    ) -> SessionRow | None:
        """The new session, or None when the owner already has `max_sessions`."""
        owner = uuid.UUID(user_id)
        params = {"id": uuid.uuid4(), "user_id": owner, "name": name, "expire_time": expire_time}
        async with self._engine.begin() as conn:
            await conn.execute(LOCK_OWNER, {"key": f"sessions:{user_id}"})
            if (await conn.execute(COUNT_SESSIONS, {"user_id": owner})).scalar_one() >= max_sessions:
                return None
            return _row((await conn.execute(INSERT_SESSION, params)).one())

    async def get(self, user_id: str, session_id: uuid.UUID, *, even_expired: bool = False) -> SessionRow | None:
        query = GET_SESSION_EVEN_EXPIRED if even_expired else GET_SESSION
        async with autocommit(self._engine) as conn:
            row = (await conn.execute(query, {"id": session_id, "user_id": uuid.UUID(user_id)})).first()
        return _row(row) if row else None

    async def update(
        self,
        user_id: str,
        session_id: uuid.UUID,
        *,
        name: str | None = None,
        set_expire: bool = False,
        expire_time: datetime | None = None,
    ) -> SessionRow | None:
        params = {
            "id": session_id,
            "user_id": uuid.UUID(user_id),
            "set_name": name is not None,
            "name": name or "",
            "set_expire": set_expire,
            "expire_time": expire_time,
        }
        async with self._engine.begin() as conn:
            row = (await conn.execute(UPDATE_SESSION, params)).first()
        return _row(row) if row else None

    async def delete(self, user_id: str, session_id: uuid.UUID) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(DELETE_SESSION, {"id": session_id, "user_id": uuid.UUID(user_id)})
        return result.rowcount == 1

    async def list(self, user_id: str, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[SessionRow]:
        params: dict = {"user_id": uuid.UUID(user_id), "limit": limit}
        query = LIST_FIRST_PAGE
        if after is not None:
            query = LIST_AFTER
            params.update(created_at=after[0], id=after[1])
        async with autocommit(self._engine) as conn:
            return [_row(row) for row in (await conn.execute(query, params)).all()]

    async def erase_user(
        self, erasure_id: str, user_id: str, *, forget_session_ids: bool = False
    ) -> tuple[dict[str, int], list[str]]:
        """Deletes every row of the user; the running totals and the sessions erased (none
        once `forget_session_ids` has dropped them from the receipt)."""
        owner, erasure = uuid.UUID(user_id), uuid.UUID(erasure_id)
        async with self._engine.begin() as conn:
            # The owner's creation lock: a CreateSession racing the erasure lands before it.
            await conn.execute(LOCK_OWNER, {"key": f"sessions:{user_id}"})
            await conn.execute(OPEN_ERASURE, {"erasure_id": erasure})
            earlier = (await conn.execute(LOCK_ERASURE, {"erasure_id": erasure})).one()
            sessions = [row.id for row in (await conn.execute(ERASE_SESSIONS, {"user_id": owner})).all()]
            clears = [row.session_id for row in (await conn.execute(ERASE_CLEARS, {"user_id": owner})).all()]
            counts = add_counts(earlier.counts, {"sessions": len(sessions), "conversation_clears": len(clears)})
            session_ids = [] if forget_session_ids else sorted({*earlier.session_ids, *sessions, *clears}, key=str)
            params = {"erasure_id": erasure, "counts": json.dumps(counts), "session_ids": session_ids}
            await conn.execute(RECORD_ERASURE, params)
        return counts, [str(session_id) for session_id in session_ids]

    async def sweep_expired(self, limit: int) -> int:
        """Records a pending conversation clear for up to `limit` newly expired sessions."""
        async with self._engine.begin() as conn:
            return len((await conn.execute(SWEEP_EXPIRED, {"limit": limit})).all())

    @asynccontextmanager
    async def due_clears(self, limit: int) -> AsyncIterator[tuple[list[PendingClear], ClearLedger]]:
        """A transaction holding up to `limit` due clears, locked against other replicas."""
        async with self._engine.begin() as conn:
            rows = (await conn.execute(DUE_CLEARS, {"limit": limit})).all()
            yield [PendingClear(str(r.session_id), str(r.user_id), r.attempts) for r in rows], ClearLedger(conn)


class ClearLedger:
    """Marks the clears of one `due_clears` transaction done or failed (retried later)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def done(self, session_id: str) -> None:
        """The agent cleared the conversation: the expired session row goes now."""
        await self._conn.execute(CLEAR_DONE, {"session_id": uuid.UUID(session_id)})

    async def failed(self, session_id: str, error: str, delay_s: float) -> None:
        params = {"session_id": uuid.UUID(session_id), "error": error[:500], "delay_s": delay_s}
        await self._conn.execute(CLEAR_FAILED, params)
