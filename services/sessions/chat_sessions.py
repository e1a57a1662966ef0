"""The rules of chat sessions: validation, ownership, expiry, paging, deletion."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runtime.errors import InvalidArgument, NotFound, ResourceExhausted
from runtime.ids import parse_uuid
from runtime.paging import decode_page_token, one_page, page_size
from services.sessions.conversations import ConversationCleaner
from services.sessions.store import SessionRow, SessionStore

MAX_NAME_LENGTH = 100
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Far enough for any retention policy, near enough that datetime arithmetic never overflows.
MAX_TTL = timedelta(days=365 * 100)


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


@dataclass(frozen=True)
class Expiry:
    """What the caller asked about expiry: an instant, a time to live, or neither."""

    expire_time: datetime | None = None
    ttl: timedelta | None = None

    def resolve(self, now: datetime) -> datetime | None:
        if self.expire_time is not None and self.ttl is not None:
            raise InvalidArgument("give expire_time or ttl, not both", reason="EXPIRE_TIME_CONFLICT")
        if self.ttl is not None:
            if not timedelta(0) < self.ttl <= MAX_TTL:
                raise InvalidArgument("ttl must be positive and at most 100 years", reason="TTL_INVALID")
            return now + self.ttl
        if self.expire_time is not None:
            if self.expire_time <= now:
                raise InvalidArgument("expire_time must be in the future", reason="EXPIRE_TIME_INVALID")
            if self.expire_time - now > MAX_TTL:
                raise InvalidArgument("expire_time must be within 100 years", reason="EXPIRE_TIME_INVALID")
            return self.expire_time
        return None


@dataclass(frozen=True)
class SessionUpdate:
    """The fields an UpdateSession changes; None / False leave a field as it is."""

    name: str | None = None
    set_expire: bool = False
    expiry: Expiry = Expiry()


class ChatSessions:
    def __init__(
        self,
        store: SessionStore,
        conversations: ConversationCleaner,
        *,
        max_sessions_per_user: int,
        default_ttl_s: float = 0.0,
    ) -> None:
        self._store = store
        self._conversations = conversations
        self._max_sessions = max_sessions_per_user
        # 0 = sessions never expire unless the caller says so.
        self._default_ttl = timedelta(seconds=default_ttl_s) if default_ttl_s > 0 else None

    async def create(self, user_id: str, name: str, expiry: Expiry = Expiry()) -> SessionRow:
        name = clean_name(name, required=False)
        if expiry.expire_time is None and expiry.ttl is None and self._default_ttl is not None:
            expiry = Expiry(ttl=self._default_ttl)
        expire_time = expiry.resolve(datetime.now(UTC))
        row = await self._store.create(user_id, name, max_sessions=self._max_sessions, expire_time=expire_time)
        if row is None:
            raise ResourceExhausted(
                f"at most {self._max_sessions} sessions per user; delete some to create more",
                reason="SESSION_QUOTA_EXCEEDED",
                metadata={"quota": "MAX_SESSIONS_PER_USER", "limit": str(self._max_sessions)},
            )
        return row

    async def get(self, user_id: str, session_id: str, *, even_expired: bool = False) -> SessionRow:
        """`even_expired` only for the sweeper, whose clear the agent checks against us."""
        row = await self._store.get(user_id, parse_session_id(session_id), even_expired=even_expired)
        if row is None:
            raise NotFound("session not found", reason="SESSION_NOT_FOUND")
        return row

    async def rename(self, user_id: str, session_id: str, name: str) -> SessionRow:
        return await self.update(user_id, session_id, SessionUpdate(name=clean_name(name, required=True)))

    async def update(self, user_id: str, session_id: str, change: SessionUpdate) -> SessionRow:
        parsed = parse_session_id(session_id)
        expire_time = change.expiry.resolve(datetime.now(UTC)) if change.set_expire else None
        row = await self._store.update(
            user_id, parsed, name=change.name, set_expire=change.set_expire, expire_time=expire_time
        )
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

    async def erase_user(
        self, erasure_id: str, user_id: str, *, forget_session_ids: bool = False
    ) -> tuple[dict[str, int], list[str]]:
        """Account deletion: every session of the user, expired ones and pending clears
        included. Their conversations are the agent's: the auth job passes the ids on."""
        return await self._store.erase_user(erasure_id, user_id, forget_session_ids=forget_session_ids)
