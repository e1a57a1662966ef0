"""Fixtures for the agent tests: stubs on the real mesh, the offline LLM's controls, and
extra agent instances with their own settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest

from agentmesh.agent.v1 import agent_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.support.agent import NewSession, StartAgent
from tests.support.runs import REPLICA_SETTINGS
from tests.support.users import MeshUser


@pytest.fixture
async def agent_channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.addr("agent")) as channel:
        yield channel


@pytest.fixture
def agent(agent_channel: grpc.aio.Channel) -> agent_pb2_grpc.AgentServiceStub:
    return agent_pb2_grpc.AgentServiceStub(agent_channel)


@pytest.fixture
async def sessions(mesh: Mesh) -> AsyncIterator[sessions_pb2_grpc.SessionServiceStub]:
    async with grpc.aio.insecure_channel(mesh.addr("sessions")) as channel:
        yield sessions_pb2_grpc.SessionServiceStub(channel)


@pytest.fixture
def new_session(sessions: sessions_pb2_grpc.SessionServiceStub) -> NewSession:
    async def create(owner: MeshUser) -> str:
        response = await sessions.CreateSession(
            sessions_pb2.CreateSessionRequest(name="agent test"), metadata=owner.metadata, timeout=10
        )
        return response.session.session_id

    return create


@pytest.fixture
async def llm_control(mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    """The offline LLM's `/_offline/*` controls; faults, scripts and stats are cleared before and after."""
    root = mesh.llm_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root, timeout=10) as client:
        assert (await client.post("/_offline/reset")).status_code == 200
        yield client
        assert (await client.post("/_offline/reset")).status_code == 200


@pytest.fixture
async def start_agent(mesh: Mesh) -> AsyncIterator[StartAgent]:
    """Starts extra agent instances (own ports, given settings); stops them afterwards."""
    started: list[ChildProcess] = []

    async def start(instance: str, **overrides: str) -> ChildProcess:
        child = await asyncio.to_thread(mesh.start_service, "agent", instance=instance, **overrides)
        started.append(child)
        return child

    yield start
    for child in started:
        await asyncio.to_thread(child.stop)


@pytest.fixture(scope="module")
def replicas(mesh: Mesh) -> Iterator[tuple[ChildProcess, ChildProcess]]:
    """Two agent replicas for the runs tests, on the runs' own model (tests/support/runs.py)."""
    first = mesh.start_service("agent", instance="-runs-a", **REPLICA_SETTINGS)
    second = mesh.start_service("agent", instance="-runs-b", **REPLICA_SETTINGS)
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
async def stubs(
    replicas: tuple[ChildProcess, ChildProcess],
) -> AsyncIterator[tuple[agent_pb2_grpc.AgentServiceStub, agent_pb2_grpc.AgentServiceStub]]:
    async with grpc.aio.insecure_channel(replicas[0].addr) as a, grpc.aio.insecure_channel(replicas[1].addr) as b:
        yield agent_pb2_grpc.AgentServiceStub(a), agent_pb2_grpc.AgentServiceStub(b)
