"""ExportAccount: the caller's sessions, conversations and memories, as a stream of records.

Read through the services' own RPCs with the caller's token (so each service applies its
ownership rules, exactly as for the user's own reads), page by page: one record per
message, and no page held longer than it takes to send it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.auth.v1 import auth_pb2
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from runtime.clients import forward_metadata, open_channel
from runtime.errors import error_from_rpc

SESSIONS_PAGE = 100
HISTORY_PAGE = 200
MEMORIES_PAGE = 100


class AccountExport:
    def __init__(self, addrs: dict[str, str], timeout_s: float) -> None:
        # Only reads: a call failed by UNAVAILABLE is safely retried by the channel.
        reads = {
            "sessions": ("agentmesh.sessions.v1.SessionService", "ListSessions"),
            "agent": ("agentmesh.agent.v1.AgentService", "GetHistory"),
            "memory": ("agentmesh.memory.v1.MemoryService", "ListMemories"),
        }
        self._channels = {name: open_channel(addrs[name], idempotent=[read]) for name, read in reads.items()}
        self._sessions = sessions_pb2_grpc.SessionServiceStub(self._channels["sessions"])
        self._agent = agent_pb2_grpc.AgentServiceStub(self._channels["agent"])
        self._memory = memory_pb2_grpc.MemoryServiceStub(self._channels["memory"])
        self._timeout_s = timeout_s

    async def records(self) -> AsyncIterator[auth_pb2.ExportAccountResponse]:
        """Each session followed by its messages, then every memory."""
        token = ""
        while True:
            page = await self._call(
                "sessions",
                self._sessions.ListSessions,
                sessions_pb2.ListSessionsRequest(page_size=SESSIONS_PAGE, page_token=token),
            )
            for session in page.sessions:
                yield auth_pb2.ExportAccountResponse(session=session)
                async for message in self._messages(session.session_id):
                    yield auth_pb2.ExportAccountResponse(message=message)
            token = page.next_page_token
            if not token:
                break
        async for memory in self._memories():
            yield auth_pb2.ExportAccountResponse(memory=memory)

    async def _messages(self, session_id: str) -> AsyncIterator[auth_pb2.ExportedMessage]:
        token = ""
        while True:
            request = agent_pb2.GetHistoryRequest(session_id=session_id, page_size=HISTORY_PAGE, page_token=token)
            page = await self._call("agent", self._agent.GetHistory, request)
            for message in page.messages:
                yield auth_pb2.ExportedMessage(session_id=session_id, message=message)
            token = page.next_page_token
            if not token:
                return

    async def _memories(self) -> AsyncIterator[memory_pb2.Memory]:
        token = ""
        while True:
            request = memory_pb2.ListMemoriesRequest(page_size=MEMORIES_PAGE, page_token=token)
            page = await self._call("memory", self._memory.ListMemories, request)
            for memory in page.memories:
                yield memory
            token = page.next_page_token
            if not token:
                return

    async def _call(self, service: str, method, request):  # any unary stub method
        try:
            return await method(request, metadata=forward_metadata(), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what=f"the {service} service (exporting the account)") from exc

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
