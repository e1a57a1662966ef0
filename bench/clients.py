"""The calls a benchmark times: registration, sessions, chat turns over gRPC, through the
gateway (SSE) and at the offline LLM directly, each returning what it measured."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import grpc
import httpx

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc

PASSWORD = "Bench-Pa55word!"
# Plain questions: none of them makes the offline model call a tool, so every path
# measures the same single LLM round.
PROMPTS = [
    "Tell me something about the history of tea.",
    "Explain quantum computing briefly.",
    "I like hiking in the mountains on weekends.",
    "What should I read to learn about gardening?",
    "My sister lives in Lisbon and works as a nurse.",
    "Give me an idea for a short story about a lighthouse.",
]
SYSTEM_PROMPT = "You are agentmesh Agent, a helpful assistant. Answer briefly."
TURN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class BenchUser:
    user_id: str
    email: str
    access_token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.access_token}"),)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass(frozen=True)
class TurnTiming:
    ok: bool
    ttft_s: float
    total_s: float
    tokens: int
    error: str = ""


async def register_user(channel: grpc.aio.Channel, prefix: str = "bench") -> BenchUser:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    email = f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"
    response = await stub.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD), timeout=30)
    return BenchUser(response.user.id, email, response.tokens.access_token)


async def create_session(channel: grpc.aio.Channel, user: BenchUser) -> str:
    stub = sessions_pb2_grpc.SessionServiceStub(channel)
    response = await stub.CreateSession(sessions_pb2.CreateSessionRequest(), metadata=user.metadata, timeout=10)
    return str(response.session.session_id)


async def grpc_stream_turn(channel: grpc.aio.Channel, user: BenchUser, session_id: str, text: str) -> TurnTiming:
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    request = agent_pb2.StreamChatRequest(session_id=session_id, message=agent_pb2.Message(role="user", content=text))
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    try:
        async for event in stub.StreamChat(request, metadata=user.metadata, timeout=TURN_TIMEOUT_S):
            kind = event.WhichOneof("event")
            if kind == "token":
                tokens += 1
                if not first:
                    first = time.perf_counter()
            elif kind == "error":
                return TurnTiming(False, 0.0, time.perf_counter() - started, tokens, event.error.message)
            elif kind == "completed":
                break
    except grpc.aio.AioRpcError as exc:
        return TurnTiming(False, 0.0, time.perf_counter() - started, tokens, exc.code().name)
    ended = time.perf_counter()
    return TurnTiming(bool(first), (first or ended) - started, ended - started, tokens)


async def grpc_chat_turn(channel: grpc.aio.Channel, user: BenchUser, session_id: str, text: str) -> TurnTiming:
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    request = agent_pb2.ChatRequest(session_id=session_id, message=agent_pb2.Message(role="user", content=text))
    started = time.perf_counter()
    try:
        response = await stub.Chat(request, metadata=user.metadata, timeout=TURN_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        return TurnTiming(False, 0.0, time.perf_counter() - started, 0, exc.code().name)
    elapsed = time.perf_counter() - started
    return TurnTiming(True, elapsed, elapsed, int(response.usage.completion_tokens))


async def gateway_stream_turn(client: httpx.AsyncClient, user: BenchUser, session_id: str, text: str) -> TurnTiming:
    headers = {**user.headers, "Accept": "text/event-stream"}
    body = {"message": {"role": "user", "content": text}}
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    try:
        async with client.stream(
            "POST", f"/v1/sessions/{session_id}:stream", json=body, headers=headers, timeout=TURN_TIMEOUT_S
        ) as response:
            if response.status_code != 200:
                await response.aread()
                return TurnTiming(False, 0.0, time.perf_counter() - started, 0, f"HTTP {response.status_code}")
            event_name = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event_name = line[6:].strip()
                    continue
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event_name == "error" or "error" in event:
                    return TurnTiming(False, 0.0, time.perf_counter() - started, tokens, str(event)[:200])
                if "token" in event:
                    tokens += 1
                    if not first:
                        first = time.perf_counter()
                elif "completed" in event:
                    break
    except httpx.HTTPError as exc:
        return TurnTiming(False, 0.0, time.perf_counter() - started, tokens, type(exc).__name__)
    ended = time.perf_counter()
    return TurnTiming(bool(first), (first or ended) - started, ended - started, tokens)


async def gateway_chat_turn(client: httpx.AsyncClient, user: BenchUser, session_id: str, text: str) -> TurnTiming:
    body = {"message": {"role": "user", "content": text}}
    started = time.perf_counter()
    try:
        response = await client.post(
            f"/v1/sessions/{session_id}:chat", json=body, headers=user.headers, timeout=TURN_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        return TurnTiming(False, 0.0, time.perf_counter() - started, 0, type(exc).__name__)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        return TurnTiming(False, 0.0, elapsed, 0, f"HTTP {response.status_code}")
    return TurnTiming(True, elapsed, elapsed, 0)


async def llm_stream_turn(client: httpx.AsyncClient, model: str, text: str) -> TurnTiming:
    """The same kind of turn at the offline LLM itself: the baseline the mesh adds to."""
    body = {
        "model": model,
        "stream": True,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
    }
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    try:
        async with client.stream("POST", "/chat/completions", json=body, timeout=TURN_TIMEOUT_S) as response:
            if response.status_code != 200:
                await response.aread()
                return TurnTiming(False, 0.0, time.perf_counter() - started, 0, f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    tokens += 1
                    if not first:
                        first = time.perf_counter()
    except httpx.HTTPError as exc:
        return TurnTiming(False, 0.0, time.perf_counter() - started, tokens, type(exc).__name__)
    ended = time.perf_counter()
    return TurnTiming(bool(first), (first or ended) - started, ended - started, tokens)
