"""Stand-in upstreams for the gateway tests: small gRPC servicers built on the generated stubs
whose behaviour the tests choose (fail at once, fail midway, hang until cancelled) and which
record what they received. They test the gateway's transcoding, not the services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc


def rich_error(code: int, message: str, reason: str) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="agentmesh", metadata={"k": "v"}))
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=[detail]))


@dataclass
class Recorder:
    """What the stand-in upstreams saw, for assertions."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    time_remaining: list[float] = field(default_factory=list)
    stream_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    stream_started: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, context: grpc.aio.ServicerContext) -> None:
        self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        remaining = context.time_remaining()
        self.time_remaining.append(remaining if remaining is not None else float("inf"))


class StandinSessions(sessions_pb2_grpc.SessionServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def CreateSession(self, request, context):
        self.recorder.record(context)
        auth = dict(context.invocation_metadata()).get("authorization", "")
        if auth != "Bearer good":
            await context.abort_with_status(rich_error(code_pb2.UNAUTHENTICATED, "bad token", "TOKEN_INVALID"))
        created = timestamp_pb2.Timestamp(seconds=1_700_000_000)
        session = sessions_pb2.Session(session_id="s-1", name=request.name, created_at=created, updated_at=created)
        return sessions_pb2.CreateSessionResponse(session=session)

    async def GetSession(self, request, context):
        self.recorder.record(context)
        if request.session_id == "missing":
            await context.abort_with_status(rich_error(code_pb2.NOT_FOUND, "no such session", "SESSION_NOT_FOUND"))
        if request.session_id == "slow":
            await asyncio.sleep(5)
        return sessions_pb2.GetSessionResponse(session=sessions_pb2.Session(session_id=request.session_id))

    async def ListSessions(self, request, context):
        self.recorder.record(context)
        return sessions_pb2.ListSessionsResponse(
            sessions=[sessions_pb2.Session(session_id="a"), sessions_pb2.Session(session_id="b")],
            next_page_token=f"{request.page_size}|{request.page_token}",
        )

    async def UpdateSession(self, request, context):
        self.recorder.record(context)
        return sessions_pb2.UpdateSessionResponse(
            session=sessions_pb2.Session(session_id=request.session_id, name=request.name)
        )

    async def DeleteSession(self, request, context):
        self.recorder.record(context)
        if request.session_id == "conflict":
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "exists")
        return sessions_pb2.DeleteSessionResponse()


class StandinAgent(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def StreamChat(self, request, context):
        self.recorder.record(context)
        session = request.session_id
        if session == "missing":
            await context.abort_with_status(rich_error(code_pb2.NOT_FOUND, "no such session", "SESSION_NOT_FOUND"))
        yield agent_pb2.ChatEvent(started=agent_pb2.RunStarted(run_id="r-1", model="standin"))
        if session == "hang":
            self.recorder.stream_started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.recorder.stream_cancelled.set()
                raise
        for text in ("Hel", "lo ", request.message.content):
            yield agent_pb2.ChatEvent(token=agent_pb2.TokenDelta(text=text))
            await asyncio.sleep(0.01)
        if session == "fail-midway":
            await context.abort_with_status(rich_error(code_pb2.INTERNAL, "model exploded", "LLM_FAILED"))
        final = agent_pb2.Message(role="assistant", content="Hello " + request.message.content)
        yield agent_pb2.ChatEvent(
            completed=agent_pb2.RunCompleted(message=final, model="standin", latency_ms=12345678901)
        )

    async def GetHistory(self, request, context):
        self.recorder.record(context)
        return agent_pb2.GetHistoryResponse(messages=[agent_pb2.Message(role="user", content="hi")])


class StandinAuth(auth_pb2_grpc.AuthServiceServicer):
    """Only the signing keys: what the gateway needs to be ready."""

    async def GetJwks(self, request, context):
        key = auth_pb2.JsonWebKey(kty="OKP", crv="Ed25519", kid="standin", alg="EdDSA", use="sig", x="AAAA")
        return auth_pb2.GetJwksResponse(keys=[key])


@dataclass
class Standin:
    address: str
    recorder: Recorder
    health: health.aio.HealthServicer


@asynccontextmanager
async def standin_server(
    add_servicers: Callable[[grpc.aio.Server], None], serving: Sequence[str]
) -> AsyncIterator[tuple[str, health.aio.HealthServicer]]:
    """A loopback gRPC server with the servicers `add_servicers` puts on it and a health
    service reporting SERVING for `serving`; yields its address and the health servicer."""
    server = grpc.aio.server()
    add_servicers(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in serving:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", health_servicer
    finally:
        await server.stop(grace=None)
