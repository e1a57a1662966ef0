"""agentmesh.agent.v1.AgentService: turns and conversations on the caller's sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from services.agent.conversations import Conversations
from services.agent.turns import TurnRunner


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, turns: TurnRunner, conversations: Conversations) -> None:
        self._turns = turns
        self._conversations = conversations

    async def Chat(self, request: agent_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> agent_pb2.ChatResponse:
        return await self._turns.chat(request.session_id, request.message)

    async def StreamChat(
        self, request: agent_pb2.StreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.ChatEvent]:
        async for event in self._turns.stream(request.session_id, request.message, context):
            yield event

    async def GetHistory(self, request: agent_pb2.GetHistoryRequest, context: grpc.aio.ServicerContext):
        messages = await self._conversations.history(request.session_id)
        return agent_pb2.GetHistoryResponse(messages=messages)

    async def ClearHistory(self, request: agent_pb2.ClearHistoryRequest, context: grpc.aio.ServicerContext):
        await self._conversations.clear(request.session_id)
        return agent_pb2.ClearHistoryResponse()
