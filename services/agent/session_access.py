"""Is this session the caller's? Asked of the sessions service, as the caller."""

from __future__ import annotations

import grpc

from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from runtime.clients import forward_metadata, open_channel
from runtime.errors import error_from_rpc
from runtime.ids import parse_id

SERVICE = "agentmesh.sessions.v1.SessionService"


class SessionAccess:
    def __init__(self, addr: str, timeout_s: float) -> None:
        self._channel = open_channel(addr, idempotent=[(SERVICE, "GetSession")])
        self._stub = sessions_pb2_grpc.SessionServiceStub(self._channel)
        self._timeout_s = timeout_s

    async def require_own(self, session_id: str) -> None:
        """Raises NotFound for a missing session or another user's (they look the same)."""
        # The canonical spelling only: threads and run locks are keyed on the raw string.
        parse_id(session_id, "session_id")
        try:
            await self._stub.GetSession(
                sessions_pb2.GetSessionRequest(session_id=session_id),
                metadata=forward_metadata(),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what="the sessions service") from None

    async def close(self) -> None:
        await self._channel.close(grace=None)
