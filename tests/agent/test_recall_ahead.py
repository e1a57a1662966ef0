"""A turn's memory search runs beside its session check, not after it: the first token waits
for the longer of the two, not their sum. The agent here has stand-in sessions and memory
services; the sessions stand-in answers GetSession only once the memory stand-in has been
asked to search, so an agent that searched after the check would never get its answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from tests.support.agent import StartAgent
from tests.support.standin import standin_server
from tests.support.users import MeshUser

SEARCH_WAIT_S = 1.5


class Memory(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self) -> None:
        self.searched = asyncio.Event()
        self.queries: list[str] = []

    async def SearchMemories(self, request, context):
        self.queries.append(request.query)
        self.searched.set()
        hit = memory_pb2.SearchResult(memory=memory_pb2.Memory(text="The user's cat is called Miso"), score=0.9)
        return memory_pb2.SearchMemoriesResponse(results=[hit])

    async def AddMemories(self, request, context):
        return memory_pb2.AddMemoriesResponse()


class Sessions(sessions_pb2_grpc.SessionServiceServicer):
    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.saw_search_first: list[bool] = []

    async def GetSession(self, request, context):
        try:
            await asyncio.wait_for(self.memory.searched.wait(), SEARCH_WAIT_S)
        except TimeoutError:
            self.saw_search_first.append(False)
            await context.abort(grpc.StatusCode.NOT_FOUND, "answered only after the memory search")
        self.saw_search_first.append(True)
        return sessions_pb2.GetSessionResponse(session=sessions_pb2.Session(session_id=request.session_id))


@pytest.fixture
async def standins() -> AsyncIterator[tuple[str, Memory, Sessions]]:
    memory = Memory()
    sessions = Sessions(memory)

    def add(server: grpc.aio.Server) -> None:
        memory_pb2_grpc.add_MemoryServiceServicer_to_server(memory, server)
        sessions_pb2_grpc.add_SessionServiceServicer_to_server(sessions, server)

    serving = ("agentmesh.memory.v1.MemoryService", "agentmesh.sessions.v1.SessionService")
    async with standin_server(add, serving) as (address, _health):
        yield address, memory, sessions


async def test_the_memory_search_runs_beside_the_session_check(
    start_agent: StartAgent, standins: tuple[str, Memory, Sessions], user: MeshUser
) -> None:
    address, memory, sessions = standins
    child = await start_agent(
        "-recall-ahead", SESSIONS_ADDR=address, MEMORY_ADDR=address, EVALS_ENABLED="false", SESSIONS_TIMEOUT_S="3"
    )
    async with grpc.aio.insecure_channel(child.addr) as channel:
        agent = agent_pb2_grpc.AgentServiceStub(channel)
        request = agent_pb2.StreamChatRequest(
            session_id=str(uuid.uuid4()), message=agent_pb2.Message(role="user", content="What is my cat called?")
        )
        events = [event async for event in agent.StreamChat(request, metadata=user.metadata, timeout=30)]

    assert sessions.saw_search_first == [True]
    assert memory.queries == ["What is my cat called?"]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[-1] == "completed", kinds
    used = [event.memory.facts for event in events if event.WhichOneof("event") == "memory"]
    assert used == [["The user's cat is called Miso"]]
