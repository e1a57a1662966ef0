"""agentmesh.agent.v1.AgentService: runs and conversations on the caller's sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from runtime.erasure import erasure_request
from runtime.errors import Unavailable
from runtime.principal import current_principal
from services.agent.conversations import Conversations
from services.agent.erasure import UserErasure
from services.agent.run_messages import chat_response, decision_message, run_message
from services.agent.runs import Runs, ending_error


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, runs: Runs, conversations: Conversations, erasure: UserErasure | None = None) -> None:
        self._runs = runs
        self._conversations = conversations
        self._erasure = erasure

    async def Chat(self, request: agent_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> agent_pb2.ChatResponse:
        events = [event async for event in self._run_and_follow(request, context)]
        return chat_response(request.message.content, events)

    async def StreamChat(
        self, request: agent_pb2.StreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.ChatEvent]:
        async for event in self._run_and_follow(request, context):
            yield event

    async def _run_and_follow(
        self, request: agent_pb2.ChatRequest | agent_pb2.StreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.ChatEvent]:
        principal = current_principal()
        run = await self._runs.create(principal, request.session_id, request.message, request.multitask_strategy)
        if request.on_disconnect == agent_pb2.ON_DISCONNECT_CANCEL:
            self._runs.cancel_on_disconnect(context, run)
        async for event in self._runs.follow(run.run_id, 0):
            yield event
            error = ending_error(event)
            if error is not None:
                raise error

    async def CreateRun(self, request: agent_pb2.CreateRunRequest, context: grpc.aio.ServicerContext):
        run = await self._runs.create(
            current_principal(), request.session_id, request.message, request.multitask_strategy
        )
        return agent_pb2.CreateRunResponse(run=run_message(run))

    async def GetRun(self, request: agent_pb2.GetRunRequest, context: grpc.aio.ServicerContext):
        run = await self._runs.get(current_principal(), request.session_id, request.run_id)
        return agent_pb2.GetRunResponse(run=run_message(run, await self._runs.pending_interrupts(run)))

    async def ListRuns(self, request: agent_pb2.ListRunsRequest, context: grpc.aio.ServicerContext):
        runs, token = await self._runs.list(request.session_id, request.page_size, request.page_token)
        return agent_pb2.ListRunsResponse(runs=[run_message(r) for r in runs], next_page_token=token)

    async def StreamRun(
        self, request: agent_pb2.StreamRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.ChatEvent]:
        run = await self._runs.get(current_principal(), request.session_id, request.run_id)
        async for event in self._runs.follow(run.run_id, request.after_seq):
            yield event

    async def CancelRun(self, request: agent_pb2.CancelRunRequest, context: grpc.aio.ServicerContext):
        run = await self._runs.cancel(current_principal(), request.session_id, request.run_id, request.action)
        return agent_pb2.CancelRunResponse(run=run_message(run))

    async def ResumeRun(self, request: agent_pb2.ResumeRunRequest, context: grpc.aio.ServicerContext):
        run = await self._runs.resume(
            current_principal(),
            request.session_id,
            request.run_id,
            request.interrupt_id,
            request.decision,
            request.arguments_json,
            request.answer,
        )
        return agent_pb2.ResumeRunResponse(run=run_message(run, await self._runs.pending_interrupts(run)))

    async def ListRunDecisions(self, request: agent_pb2.ListRunDecisionsRequest, context: grpc.aio.ServicerContext):
        rows = await self._runs.decisions(current_principal(), request.session_id, request.run_id)
        return agent_pb2.ListRunDecisionsResponse(decisions=[decision_message(row) for row in rows])

    async def GetHistory(self, request: agent_pb2.GetHistoryRequest, context: grpc.aio.ServicerContext):
        messages, token = await self._conversations.history(request.session_id, request.page_size, request.page_token)
        return agent_pb2.GetHistoryResponse(messages=messages, next_page_token=token)

    async def ClearHistory(self, request: agent_pb2.ClearHistoryRequest, context: grpc.aio.ServicerContext):
        await self._conversations.clear(request.session_id)
        return agent_pb2.ClearHistoryResponse()

    async def EraseUserData(self, request: agent_pb2.EraseUserDataRequest, context: grpc.aio.ServicerContext):
        erasure = erasure_request(request)
        if self._erasure is None:
            raise Unavailable("this replica cannot erase user data", reason="ERASURE_UNAVAILABLE")
        counts = await self._erasure.erase(erasure.erasure_id, erasure.user_id, erasure.session_ids)
        return agent_pb2.EraseUserDataResponse(counts=counts)
