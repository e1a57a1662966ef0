"""Talking to the agent service in tests: request builders, event readers, the offline
LLM's statistics, and what a valid conversation looks like."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import httpx

from agentmesh.agent.v1 import agent_pb2
from meshctl.processes import ChildProcess
from tests.support.users import MeshUser

# What the `new_session` and `start_agent` fixtures (tests/agent/conftest.py) hand a test.
NewSession = Callable[[MeshUser], Awaitable[str]]
StartAgent = Callable[..., Awaitable[ChildProcess]]


def chat_request(session_id: str, content: str, role: str = "user") -> agent_pb2.ChatRequest:
    return agent_pb2.ChatRequest(session_id=session_id, message=agent_pb2.Message(role=role, content=content))


def stream_request(session_id: str, content: str, role: str = "user") -> agent_pb2.StreamChatRequest:
    return agent_pb2.StreamChatRequest(session_id=session_id, message=agent_pb2.Message(role=role, content=content))


async def collect(call: grpc.aio.UnaryStreamCall) -> list[agent_pb2.ChatEvent]:
    return [event async for event in call]


def kinds(events: list[agent_pb2.ChatEvent]) -> list[str]:
    return [str(event.WhichOneof("event")) for event in events]


async def offline_stats(control: httpx.AsyncClient) -> dict:
    response = await control.get("/_offline/stats")
    assert response.status_code == 200
    return response.json()


def assert_alternating(messages: list[agent_pb2.Message]) -> None:
    """A valid conversation: user, assistant, user, assistant..., nothing else, nothing empty."""
    roles = [m.role for m in messages]
    assert roles == ["user", "assistant"] * (len(roles) // 2), roles
    assert all(m.content for m in messages)
