"""The rules of chat sessions: validation, ownership, paging, deletion."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from services.common.errors import InvalidArgument, NotFound
from services.sessions.conversations import ConversationCleaner
from services.sessions.store import SessionRow, SessionStore

MAX_NAME_LENGTH = 100
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def parse_session_id(session_id: str) -> uuid.UUID:
    if not session_id:
        raise InvalidArgument("session_id is required", reason="SESSION_ID_REQUIRED")
    try:
        return uuid.UUID(session_id)
    except ValueError:
        raise InvalidArgument("session_id must be a UUID", reason="SESSION_ID_INVALID") from None


def clean_name(name: str, *, required: bool) -> str:
    name = name.strip()
    if required and not name:
        raise InvalidArgument("name must not be empty", reason="NAME_REQUIRED")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"name must be at most {MAX_NAME_LENGTH} characters", reason="NAME_TOO_LONG")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidArgument("name must not contain control characters", reason="NAME_INVALID")
    return name


def encode_page_token(row: SessionRow) -> str:
    cursor = json.dumps([row.created_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(cursor).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created_at, session_id = json.loads(raw)
        return datetime.fromisoformat(created_at), uuid.UUID(session_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not valid", reason="PAGE_TOKEN_INVALID") from None


def page_size(requested: int) -> int:
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}", reason="PAGE_SIZE_INVALID")
    return requested or DEFAULT_PAGE_SIZE


class ChatSessions:
    def __init__(self, store: SessionStore, conversations: ConversationCleaner) -> None:
        self._store = store
        self._conversations = conversations

    async def create(self, user_id: str, name: str) -> SessionRow:
        return await self._store.create(user_id, clean_name(name, required=False))

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
        size = page_size(requested_size)
        after = decode_page_token(page_token) if page_token else None
        # One extra row tells whether another page exists without a COUNT.
        rows = await self._store.list(user_id, size + 1, after)
        if len(rows) > size:
            return rows[:size], encode_page_token(rows[size - 1])
        return rows, ""
