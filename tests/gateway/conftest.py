"""Fixtures for the gateway tests.

Two kinds of upstream:
- `standin`: small gRPC servicers built on the generated stubs, on loopback, whose behaviour the
  gateway tests choose (fail at once, fail midway, hang until cancelled) and which record what they
  received. They test the gateway's transcoding, not the services.
- `mesh_gateway`: the real gateway process (`python -m gateway`) in front of the real services
  started by the lead's session-scoped `mesh` fixture in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
import uvicorn
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from gateway.app import create_app
from gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[Standin]:
    recorder = Recorder()
    server = grpc.aio.server()
    sessions_pb2_grpc.add_SessionServiceServicer_to_server(StandinSessions(recorder), server)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(StandinAgent(recorder), server)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(StandinAuth(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("agentmesh.sessions.v1.SessionService", "agentmesh.agent.v1.AgentService"):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Standin(f"127.0.0.1:{port}", recorder, health_servicer)
    finally:
        await server.stop(grace=None)


def standin_settings(address: str, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {
        "sessions_addr": address,
        "agent_addr": address,
        # Upstreams the stand-in does not serve point at a closed port: they answer 503.
        "auth_addr": f"127.0.0.1:{free_port()}",
        "memory_addr": f"127.0.0.1:{free_port()}",
        "evals_addr": f"127.0.0.1:{free_port()}",
        "rate_limit_enabled": False,
        "gateway_sse_heartbeat": 0.2,
        # Several in-process gateways run at once; each takes a free metrics port.
        "gateway_metrics_port": 0,
        "_env_file": None,
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


class GatewayUrl(str):
    """The public base URL, which also knows the gateway's metrics port."""

    metrics_url: str


@contextlib.asynccontextmanager
async def serve_in_process(settings: GatewaySettings) -> AsyncIterator[GatewayUrl]:
    """The gateway app on a real loopback socket (uvicorn in this event loop); yields its base URL."""
    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        await asyncio.sleep(0.02)
    url = GatewayUrl(f"http://127.0.0.1:{port}")
    url.metrics_url = f"http://{app.state.gateway.metrics_address}"
    try:
        yield url
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def standin_gateway(standin: Standin) -> AsyncIterator[GatewayUrl]:
    async with serve_in_process(standin_settings(standin.address)) as url:
        yield url


@pytest.fixture
async def client(standin_gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin_gateway, timeout=10) as http:
        yield http


# ---- the real mesh ----


@dataclass
class GatewayProcess:
    url: str
    env: dict[str, str]
    log_path: Path | None = None

    @property
    def metrics_url(self) -> str:
        """The metrics port (/metrics, /upstreamz), which is not the public one."""
        return f"http://127.0.0.1:{self.env['GATEWAY_METRICS_PORT']}"


def start_gateway_process(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full_env = {**os.environ, **env, "GATEWAY_PORT": str(port), "GATEWAY_HOST": "127.0.0.1"}
    full_env.setdefault("GATEWAY_METRICS_PORT", str(free_port()))
    # Output goes to a file: an unread pipe fills up and blocks the gateway mid-request.
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"the gateway did not answer /healthz within 30s; see {log_path}")


def stop_gateway_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def mesh_env(request: pytest.FixtureRequest) -> dict[str, str]:

    try:
        mesh = request.getfixturevalue("mesh")
    except pytest.FixtureLookupError:
        pytest.skip("the session-scoped `mesh` fixture is not in tests/conftest.py yet")
    return dict(mesh.env)


@contextlib.contextmanager
def gateway_process(env: dict[str, str]) -> Iterator[GatewayProcess]:
    log_dir = Path(tempfile.mkdtemp(prefix="gateway-test-"))
    env = {**env, "GATEWAY_METRICS_PORT": env.get("GATEWAY_METRICS_PORT") or str(free_port())}
    process, url = start_gateway_process(env, log_dir / "gateway.log")
    try:
        yield GatewayProcess(url, env, log_dir / "gateway.log")
    finally:
        stop_gateway_process(process)


@pytest.fixture(scope="session")
def mesh_gateway(mesh_env: dict[str, str]) -> Iterator[GatewayProcess]:
    """The gateway with rate limits raised far out of the way; rate-limit tests start their own."""
    env = {**mesh_env, "RATE_LIMIT_DEFAULT": "100000 per minute"}
    for name in ("READ", "CHAT", "CHAT_STREAM", "MESSAGES", "LOGIN", "REGISTER"):
        env[f"RATE_LIMIT_{name}"] = "100000 per minute"
    with gateway_process(env) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def agent_metrics_url(request: pytest.FixtureRequest, mesh_env: dict[str, str]) -> str:
    mesh = request.getfixturevalue("mesh")
    agent = mesh.processes.get("agent")
    if agent is None or not agent.metrics_addr:
        pytest.skip("the mesh runs no agent service")
    return f"http://{agent.metrics_addr}/metrics"


@contextlib.contextmanager
def offline_llm_stall(llm_root: str, *, stall_s: float, after_tokens: int) -> Iterator[None]:
    """Every streamed answer of the offline LLM pauses after `after_tokens` tokens, until exit.

    Every request, not just the next one: background work (memory extraction, judging) also calls
    the model and would otherwise take a one-shot fault meant for the turn under test.
    """
    stall = {"model": "*", "kind": "stall", "stall_s": stall_s, "after_tokens": after_tokens, "count": -1}
    assert httpx.post(f"{llm_root}/_offline/faults", json=stall, timeout=10).status_code == 200
    try:
        yield
    finally:
        httpx.post(f"{llm_root}/_offline/reset", timeout=10)
