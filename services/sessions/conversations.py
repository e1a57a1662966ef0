"""Deleting a session's conversation state, which the agent service owns.

The sessions service never touches the agent's tables: it asks the agent, as the
caller, to clear the thread before the session row goes. If the agent cannot be
reached the deletion fails as a whole (UNAVAILABLE) rather than orphaning state.

The expiry sweeper has no caller: it asks as the sessions service itself, on behalf of
the session's owner (`clear_for`), and keeps a durable record until the agent confirms.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from runtime.clients import forward_metadata, open_channel
from runtime.errors import error_from_rpc
from runtime.service_identity import ServiceIdentity


class ConversationCleaner(Protocol):
    async def clear(self, session_id: str) -> None: ...
    async def clear_for(self, session_id: str, user_id: str) -> None: ...
    async def close(self) -> None: ...


class AgentConversationCleaner:
    def __init__(self, agent_addr: str, timeout_s: float, identity: ServiceIdentity | None = None) -> None:
        self._channel = open_channel(agent_addr)
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        self._timeout_s = timeout_s
        self._identity = identity

    async def clear(self, session_id: str) -> None:
        try:
            await self._stub.ClearHistory(
                agent_pb2.ClearHistoryRequest(session_id=session_id),
                metadata=forward_metadata(),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return  # nothing stored for this session
            raise error_from_rpc(exc, what="the agent service (needed to delete the conversation)") from exc

    async def clear_for(self, session_id: str, user_id: str) -> None:
        """Clears a swept session's conversation as this service, for its owner. Any
        failure raises, NOT_FOUND included: the session row is already gone, so the agent
        answering NOT_FOUND means it checked ownership instead of clearing, and the
        caller keeps the clear pending."""
        if self._identity is None:
            raise RuntimeError("clearing without a caller needs the service identity")
        try:
            await self._stub.ClearHistory(
                agent_pb2.ClearHistoryRequest(session_id=session_id),
                metadata=await self._identity.metadata(on_behalf_of=user_id),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what="the agent service (needed to delete the conversation)") from exc

    async def close(self) -> None:
        await self._channel.close(grace=None)
        if self._identity is not None:
            await self._identity.close()


class NoConversationCleaner:
    """For deployments without an agent service: there is no conversation state."""

    async def clear(self, session_id: str) -> None:
        return None

    async def clear_for(self, session_id: str, user_id: str) -> None:
        return None

    async def close(self) -> None:
        return None
