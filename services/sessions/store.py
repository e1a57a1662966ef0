"""The sessions service's table (schema `sessions`) and every query on it.

Every query names the owner: a session of another user is indistinguishable from a
missing one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# One clock reading for both times: a new session was never renamed.
INSERT_SESSION = text(
    "INSERT INTO sessions (id, user_id, name, created_at, updated_at)"
    " SELECT :id, :user_id, :name, t.now, t.now FROM (SELECT clock_timestamp() AS now) AS t"
    " RETURNING id, user_id, name, created_at, updated_at"
)
GET_SESSION = text(
    "SELECT id, user_id, name, created_at, updated_at FROM sessions WHERE id = :id AND user_id = :user_id"
)
RENAME_SESSION = text(
    "UPDATE sessions SET name = :name, updated_at = clock_timestamp() WHERE id = :id AND user_id = :user_id"
    " RETURNING id, user_id, name, created_at, updated_at"
)
# Creation takes the owner's lock, so the count below is exact across replicas: two
# creates racing at the quota's edge cannot both pass.
LOCK_OWNER = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
COUNT_SESSIONS = text("SELECT count(*) FROM sessions WHERE user_id = :user_id")
DELETE_SESSION = text("DELETE FROM sessions WHERE id = :id AND user_id = :user_id")
LIST_FIRST_PAGE = text(
    "SELECT id, user_id, name, created_at, updated_at FROM sessions WHERE user_id = :user_id"
    " ORDER BY created_at DESC, id DESC LIMIT :limit"
)
LIST_AFTER = text(
    "SELECT id, user_id, name, created_at, updated_at FROM sessions WHERE user_id = :user_id"
    " AND (created_at, id) < (:created_at, :id) ORDER BY created_at DESC, id DESC LIMIT :limit"
)


@dataclass(frozen=True)
class SessionRow:
    id: str
    user_id: str
    name: str
    created_at: datetime
    updated_at: datetime


def _row(row) -> SessionRow:
    return SessionRow(str(row.id), str(row.user_id), row.name, row.created_at, row.updated_at)


class SessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, user_id: str, name: str, *, max_sessions: int) -> SessionRow | None:
        """The new session, or None when the owner already has `max_sessions`."""
        owner = uuid.UUID(user_id)
        params = {"id": uuid.uuid4(), "user_id": owner, "name": name}
        async with self._engine.begin() as conn:
            await conn.execute(LOCK_OWNER, {"key": f"sessions:{user_id}"})
            if (await conn.execute(COUNT_SESSIONS, {"user_id": owner})).scalar_one() >= max_sessions:
                return None
            return _row((await conn.execute(INSERT_SESSION, params)).one())

    async def get(self, user_id: str, session_id: uuid.UUID) -> SessionRow | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(GET_SESSION, {"id": session_id, "user_id": uuid.UUID(user_id)})).first()
        return _row(row) if row else None

    async def rename(self, user_id: str, session_id: uuid.UUID, name: str) -> SessionRow | None:
        params = {"id": session_id, "user_id": uuid.UUID(user_id), "name": name}
        async with self._engine.begin() as conn:
            row = (await conn.execute(RENAME_SESSION, params)).first()
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
        async with self._engine.connect() as conn:
            return [_row(row) for row in (await conn.execute(query, params)).all()]
