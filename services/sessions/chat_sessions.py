"""The rules of chat sessions: validation, ownership, paging, deletion."""

from __future__ import annotations

import uuid
from datetime import datetime

from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.common.ids import parse_uuid
from services.common.paging import decode_page_token, one_page, page_size
from services.sessions.conversations import ConversationCleaner
from services.sessions.store import SessionRow, SessionStore

MAX_NAME_LENGTH = 100
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def parse_session_id(session_id: str) -> uuid.UUID:
    # Only the canonical spelling: the agent keys threads and locks on the raw string.
    return parse_uuid(session_id, "session_id")


def clean_name(name: str, *, required: bool) -> str:
    name = name.strip()
    if required and not name:
        raise InvalidArgument("name must not be empty", reason="NAME_REQUIRED")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"name must be at most {MAX_NAME_LENGTH} characters", reason="NAME_TOO_LONG")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidArgument("name must not contain control characters", reason="NAME_INVALID")
    return name


class ChatSessions:
    def __init__(self, store: SessionStore, conversations: ConversationCleaner, *, max_sessions_per_user: int) -> None:
        self._store = store
        self._conversations = conversations
        self._max_sessions = max_sessions_per_user

    async def create(self, user_id: str, name: str) -> SessionRow:
        row = await self._store.create(user_id, clean_name(name, required=False), max_sessions=self._max_sessions)
        if row is None:
            raise ResourceExhausted(
                f"at most {self._max_sessions} sessions per user; delete some to create more",
                reason="SESSION_QUOTA_EXCEEDED",
                metadata={"quota": "MAX_SESSIONS_PER_USER", "limit": str(self._max_sessions)},
            )
        return row

    async def get(self, user_id: str, session_id: str) -> SessionRow:
        row = await self._store.get(user_id, parse_session_id(session_id))
        if row is None:
            raise NotFound("session not found", reason="SESSION_NOT_FOUND")
        return row

    async def rename(self, user_id: str, session_id: str, name: str) -> SessionRow:
        parsed = parse_session_id(session_id)
        row = await self._store.rename(user_id, parsed, clean_name(name, required=True))
        if row is None:
            raise NotFound("session not found", reason="SESSION_NOT_FOUND")
        return row

    async def delete(self, user_id: str, session_id: str) -> None:
        row = await self.get(user_id, session_id)
        await self._conversations.clear(row.id)
        if not await self._store.delete(user_id, uuid.UUID(row.id)):
            raise NotFound("session not found", reason="SESSION_NOT_FOUND")

    async def list(self, user_id: str, requested_size: int, page_token: str) -> tuple[list[SessionRow], str]:
        size = page_size(requested_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        after = decode_page_token(page_token, datetime.fromisoformat, uuid.UUID) if page_token else None
        rows = await self._store.list(user_id, size + 1, after)
        return one_page(rows, size, lambda row: (row.created_at, row.id))
