"""Deleting a session's conversation state, which the agent service owns.

The sessions service never touches the agent's tables: it asks the agent, as the
caller, to clear the thread before the session row goes. If the agent cannot be
reached the deletion fails as a whole (UNAVAILABLE) rather than orphaning state.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from services.common.clients import forward_metadata, open_channel
from services.common.errors import error_from_rpc


class ConversationCleaner(Protocol):
    async def clear(self, session_id: str) -> None: ...
    async def close(self) -> None: ...


class AgentConversationCleaner:
    def __init__(self, agent_addr: str, timeout_s: float) -> None:
        self._channel = open_channel(agent_addr)
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        self._timeout_s = timeout_s

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

    async def close(self) -> None:
        await self._channel.close(grace=None)


class NoConversationCleaner:
    """For deployments without an agent service: there is no conversation state."""

    async def clear(self, session_id: str) -> None:
        return None

    async def close(self) -> None:
        return None
