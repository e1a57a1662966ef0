"""agentmesh.sessions.v1.SessionService: every call scoped to the caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from runtime.erasure import erasure_request
from runtime.errors import InvalidArgument
from runtime.ids import acting_user_id
from runtime.principal import current_principal
from services.sessions.chat_sessions import ChatSessions, Expiry, SessionUpdate, clean_name
from services.sessions.store import SessionRow

UPDATABLE = ("name", "expire_time", "ttl")


def session_message(row: SessionRow) -> sessions_pb2.Session:
    created, updated = Timestamp(), Timestamp()
    created.FromDatetime(row.created_at)
    updated.FromDatetime(row.updated_at)
    session = sessions_pb2.Session(
        session_id=row.id, name=row.name, created_at=created, updated_at=updated, user_id=row.user_id
    )
    if row.expire_time is not None:
        session.expire_time.FromDatetime(row.expire_time)
    return session


def timestamp_value(value: Timestamp, field: str) -> datetime:
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} is not a valid time", reason="EXPIRE_TIME_INVALID") from None


def duration_value(value: Duration, field: str) -> timedelta:
    try:
        return value.ToTimedelta()
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} is not a valid duration", reason="TTL_INVALID") from None


def expiry_of(message, *, expire_field: str = "expire_time", ttl_field: str = "ttl") -> Expiry:
    return Expiry(
        expire_time=timestamp_value(message.expire_time, expire_field) if message.HasField("expire_time") else None,
        ttl=duration_value(message.ttl, ttl_field) if message.HasField("ttl") else None,
    )


def update_of(request: sessions_pb2.UpdateSessionRequest) -> tuple[str, SessionUpdate]:
    """The session id and the change, from either form of UpdateSession.

    Flat form: `name`. AIP form (AIP-134): `session` + `update_mask`; an empty mask means
    the fields set in `session`, `*` means name and expiry."""
    if not request.HasField("session") and not request.HasField("update_mask"):
        return request.session_id, SessionUpdate(name=clean_name(request.name, required=True))
    if request.name:
        raise InvalidArgument(
            "give either name (flat form) or session with update_mask, not both", reason="UPDATE_FORM_CONFLICT"
        )
    session = request.session
    session_id = request.session_id or session.session_id
    if request.session_id and session.session_id and session.session_id != request.session_id:
        raise InvalidArgument("session.session_id differs from session_id", reason="SESSION_ID_MISMATCH")
    paths = list(request.update_mask.paths)
    if not paths:
        populated = {
            "name": bool(session.name),
            "expire_time": session.HasField("expire_time"),
            "ttl": session.HasField("ttl"),
        }
        paths = [path for path, is_set in populated.items() if is_set]
    if paths == ["*"]:
        paths = ["name", "ttl" if session.HasField("ttl") else "expire_time"]
    unknown = [p for p in paths if p not in UPDATABLE]
    if unknown:
        raise InvalidArgument(
            f"update_mask may name only {', '.join(UPDATABLE)} (or *), not {unknown[0]!r}",
            reason="UPDATE_MASK_INVALID",
            metadata={"path": unknown[0][:100]},
        )
    if not paths:
        raise InvalidArgument("nothing to update: update_mask names no field", reason="UPDATE_MASK_EMPTY")
    name = clean_name(session.name, required=True) if "name" in paths else None
    set_expire = "expire_time" in paths or "ttl" in paths
    expiry = Expiry(
        expire_time=timestamp_value(session.expire_time, "session.expire_time")
        if "expire_time" in paths and session.HasField("expire_time")
        else None,
        ttl=duration_value(session.ttl, "session.ttl") if "ttl" in paths and session.HasField("ttl") else None,
    )
    if "ttl" in paths and expiry.ttl is None:
        raise InvalidArgument("update_mask names ttl but session.ttl is not set", reason="TTL_INVALID")
    return session_id, SessionUpdate(name=name, set_expire=set_expire, expiry=expiry)


class SessionServicer(sessions_pb2_grpc.SessionServiceServicer):
    def __init__(self, sessions: ChatSessions, own_service: str = "sessions") -> None:
        self._sessions = sessions
        # This service's own name: its sweeper clears an expired session's conversation
        # through the agent, which checks the session here with our token.
        self._own_service = own_service

    async def CreateSession(self, request: sessions_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext):
        row = await self._sessions.create(acting_user_id(current_principal()), request.name, expiry_of(request))
        return sessions_pb2.CreateSessionResponse(session=session_message(row))

    async def ListSessions(self, request: sessions_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext):
        rows, token = await self._sessions.list(
            acting_user_id(current_principal()), request.page_size, request.page_token
        )
        return sessions_pb2.ListSessionsResponse(sessions=[session_message(r) for r in rows], next_page_token=token)

    async def GetSession(self, request: sessions_pb2.GetSessionRequest, context: grpc.aio.ServicerContext):
        principal = current_principal()
        row = await self._sessions.get(
            acting_user_id(principal), request.session_id, even_expired=principal.service == self._own_service
        )
        return sessions_pb2.GetSessionResponse(session=session_message(row))

    async def UpdateSession(self, request: sessions_pb2.UpdateSessionRequest, context: grpc.aio.ServicerContext):
        session_id, change = update_of(request)
        row = await self._sessions.update(acting_user_id(current_principal()), session_id, change)
        return sessions_pb2.UpdateSessionResponse(session=session_message(row))

    async def DeleteSession(self, request: sessions_pb2.DeleteSessionRequest, context: grpc.aio.ServicerContext):
        await self._sessions.delete(acting_user_id(current_principal()), request.session_id)
        return sessions_pb2.DeleteSessionResponse()

    async def EraseUserData(self, request: sessions_pb2.EraseUserDataRequest, context: grpc.aio.ServicerContext):
        erasure = erasure_request(request)
        counts, session_ids = await self._sessions.erase_user(
            erasure.erasure_id, erasure.user_id, forget_session_ids=request.forget_session_ids
        )
        return sessions_pb2.EraseUserDataResponse(counts=counts, session_ids=session_ids)
