"""agentmesh.sessions.v1.SessionService: every call scoped to the caller."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from services.common.principal import current_principal
from services.sessions.chat_sessions import ChatSessions
from services.sessions.store import SessionRow


def session_message(row: SessionRow) -> sessions_pb2.Session:
    created, updated = Timestamp(), Timestamp()
    created.FromDatetime(row.created_at)
    updated.FromDatetime(row.updated_at)
    return sessions_pb2.Session(
        session_id=row.id, name=row.name, created_at=created, updated_at=updated, user_id=row.user_id
    )


class SessionServicer(sessions_pb2_grpc.SessionServiceServicer):
    def __init__(self, sessions: ChatSessions) -> None:
        self._sessions = sessions

    async def CreateSession(self, request: sessions_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext):
        row = await self._sessions.create(current_principal().user_id, request.name)
        return sessions_pb2.CreateSessionResponse(session=session_message(row))

    async def ListSessions(self, request: sessions_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext):
        rows, token = await self._sessions.list(current_principal().user_id, request.page_size, request.page_token)
        return sessions_pb2.ListSessionsResponse(sessions=[session_message(r) for r in rows], next_page_token=token)

    async def GetSession(self, request: sessions_pb2.GetSessionRequest, context: grpc.aio.ServicerContext):
        row = await self._sessions.get(current_principal().user_id, request.session_id)
        return sessions_pb2.GetSessionResponse(session=session_message(row))

    async def UpdateSession(self, request: sessions_pb2.UpdateSessionRequest, context: grpc.aio.ServicerContext):
        row = await self._sessions.rename(current_principal().user_id, request.session_id, request.name)
        return sessions_pb2.UpdateSessionResponse(session=session_message(row))

    async def DeleteSession(self, request: sessions_pb2.DeleteSessionRequest, context: grpc.aio.ServicerContext):
        await self._sessions.delete(current_principal().user_id, request.session_id)
        return sessions_pb2.DeleteSessionResponse()
