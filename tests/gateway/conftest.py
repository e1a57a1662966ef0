"""Fixtures for the gateway tests.

Two kinds of upstream:
- `standin`: the stand-in gRPC servicers of tests/support/standin.py on loopback, behind an
  in-process gateway. They test the gateway's transcoding, not the services.
- `mesh_gateway`: the real gateway process (`python -m gateway`) in front of the real services
  started by the session-scoped `mesh` fixture in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from agentmesh.agent.v1 import agent_pb2_grpc
from agentmesh.auth.v1 import auth_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.gateway import GatewayProcess, GatewayUrl, gateway_process, serve_in_process, standin_settings
from tests.support.standin import Recorder, Standin, StandinAgent, StandinAuth, StandinSessions, standin_server


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[Standin]:
    recorder = Recorder()

    def add(server: grpc.aio.Server) -> None:
        sessions_pb2_grpc.add_SessionServiceServicer_to_server(StandinSessions(recorder), server)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(StandinAgent(recorder), server)
        auth_pb2_grpc.add_AuthServiceServicer_to_server(StandinAuth(), server)

    serving = ("agentmesh.sessions.v1.SessionService", "agentmesh.agent.v1.AgentService")
    async with standin_server(add, serving) as (address, health_servicer):
        yield Standin(address, recorder, health_servicer)


@pytest.fixture(scope="module")
async def standin_gateway(standin: Standin) -> AsyncIterator[GatewayUrl]:
    async with serve_in_process(standin_settings(standin.address)) as url:
        yield url


@pytest.fixture
async def client(standin_gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin_gateway, timeout=10) as http:
        yield http


# ---- the real mesh ----


@pytest.fixture(scope="session")
def mesh_env(mesh: Mesh) -> dict[str, str]:
    return dict(mesh.env)


@pytest.fixture(scope="session")
def mesh_gateway(mesh_env: dict[str, str]) -> Iterator[GatewayProcess]:
    """The gateway with rate limits raised far out of the way; rate-limit tests start their own."""
    env = {**mesh_env, "RATE_LIMIT_DEFAULT": "100000 per minute"}
    for name in ("READ", "CHAT", "CHAT_STREAM", "MESSAGES", "LOGIN", "REGISTER"):
        env[f"RATE_LIMIT_{name}"] = "100000 per minute"
    with gateway_process(env) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def agent_metrics_url(mesh: Mesh) -> str:
    agent = mesh.processes.get("agent")
    if agent is None or not agent.metrics_addr:
        pytest.skip("MESH_ONLY leaves out the agent service")
    return f"http://{agent.metrics_addr}/metrics"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, for the chat page tests."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
