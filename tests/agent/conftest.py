"""Fixtures for the agent tests: stubs on the real mesh, the offline LLM's controls, and
extra agent instances with their own settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
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


NewSession = Callable[[MeshUser], Awaitable[str]]


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


StartAgent = Callable[..., Awaitable[ChildProcess]]


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


def chat_request(session_id: str, content: str, role: str = "user") -> agent_pb2.ChatRequest:
    return agent_pb2.ChatRequest(session_id=session_id, message=agent_pb2.Message(role=role, content=content))


def stream_request(session_id: str, content: str, role: str = "user") -> agent_pb2.StreamChatRequest:
    return agent_pb2.StreamChatRequest(session_id=session_id, message=agent_pb2.Message(role=role, content=content))


async def collect(call: grpc.aio.UnaryStreamCall) -> list[agent_pb2.ChatEvent]:
    return [event async for event in call]


def kinds(events: list[agent_pb2.ChatEvent]) -> list[str]:
    return [str(event.WhichOneof("event")) for event in events]


async def scrape(metrics_addr: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://{metrics_addr}/metrics")).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def offline_stats(control: httpx.AsyncClient) -> dict:
    response = await control.get("/_offline/stats")
    assert response.status_code == 200
    return response.json()


def assert_alternating(messages: list[agent_pb2.Message]) -> None:
    """A valid conversation: user, assistant, user, assistant..., nothing else, nothing empty."""
    roles = [m.role for m in messages]
    assert roles == ["user", "assistant"] * (len(roles) // 2), roles
    assert all(m.content for m in messages)
