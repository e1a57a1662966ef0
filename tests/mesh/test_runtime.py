"""What the shared runtime gives every service: health, reflection, metrics, a clean
SIGTERM drain, and state that survives restarts."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import urllib.request
import uuid

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import SERVICES, Mesh, free_port
from meshctl.processes import ROOT
from tests.support.users import MeshUser, unique_email
from tests.support.waiting import eventually

SERVICE_NAMES = {
    "auth": "agentmesh.auth.v1.AuthService",
    "sessions": "agentmesh.sessions.v1.SessionService",
    "agent": "agentmesh.agent.v1.AgentService",
    "memory": "agentmesh.memory.v1.MemoryService",
    "evals": "agentmesh.evals.v1.EvalService",
}


def running_services(mesh: Mesh) -> list[str]:
    return [name for name, *_ in SERVICES if name in mesh.processes]


async def test_every_server_answers_health_and_reflection(mesh: Mesh) -> None:
    names = running_services(mesh)
    assert {"auth", "sessions"} <= set(names)
    for name in names:
        async with grpc.aio.insecure_channel(mesh.addr(name)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE_NAMES[name]):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            listed = set()
            async for response in responses:
                listed |= {s.name for s in response.list_services_response.service}
            assert {SERVICE_NAMES[name], "grpc.health.v1.Health"} <= listed


async def test_metrics_show_per_method_counters(mesh: Mesh, auth_stub, user: MeshUser) -> None:
    for _ in range(3):
        await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=user.metadata)
    with pytest.raises(grpc.aio.AioRpcError):
        await auth_stub.GetMe(auth_pb2.GetMeRequest())
    url = f"http://{mesh.processes['auth'].metrics_addr}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    ok = next(
        line
        for line in body.splitlines()
        if line.startswith("grpc_server_handled_total{") and 'grpc_method="GetMe"' in line and 'grpc_code="OK"' in line
    )
    assert float(ok.rsplit(" ", 1)[1]) >= 3
    assert any(
        'grpc_method="GetMe"' in line and 'grpc_code="UNAUTHENTICATED"' in line
        for line in body.splitlines()
        if line.startswith("grpc_server_handled_total{")
    )
    for family in ("grpc_server_handling_seconds_count{", "grpc_server_started_total{"):
        assert any(line.startswith(family) and 'grpc_method="GetMe"' in line for line in body.splitlines())


async def test_sigterm_during_a_call_lets_it_finish(mesh: Mesh) -> None:
    # A high bcrypt cost makes Register take about a second: long enough to SIGTERM mid-call.
    slow = mesh.start_service("auth", instance="-drain", BCRYPT_ROUNDS="14")
    try:
        async with grpc.aio.insecure_channel(slow.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            call = asyncio.ensure_future(
                stub.Register(auth_pb2.RegisterRequest(email=unique_email("drain"), password=MeshUser.PASSWORD))
            )
            await asyncio.sleep(0.3)
            slow.signal(signal.SIGTERM)
            reply = await asyncio.wait_for(call, 30)
            assert reply.user.id
            # New calls are refused while draining / after stop.
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=2)
        assert await asyncio.to_thread(slow.process.wait, 30) == 0
    finally:
        slow.kill()
        mesh.processes.pop("auth-drain", None)


async def test_a_restart_keeps_users_sessions_and_keys(mesh: Mesh) -> None:
    ports = {name: (str(free_port()), str(free_port())) for name in ("auth", "sessions")}

    def start(name: str):
        grpc_port, metrics_port = ports[name]
        return mesh.start_service(
            name,
            instance="-restart",
            GRPC_PORT=grpc_port,
            METRICS_PORT=metrics_port,
            AUTH_ADDR=f"127.0.0.1:{ports['auth'][0]}",
        )

    auth, sessions = start("auth"), start("sessions")
    try:
        async with grpc.aio.insecure_channel(auth.addr) as a, grpc.aio.insecure_channel(sessions.addr) as s:
            auth_stub, sessions_stub = auth_pb2_grpc.AuthServiceStub(a), sessions_pb2_grpc.SessionServiceStub(s)
            email = unique_email("restart")
            registered = await auth_stub.Register(auth_pb2.RegisterRequest(email=email, password=MeshUser.PASSWORD))
            token = (("authorization", f"Bearer {registered.tokens.access_token}"),)
            kids = [k.kid for k in (await auth_stub.GetJwks(auth_pb2.GetJwksRequest())).keys]
            session = (
                await sessions_stub.CreateSession(sessions_pb2.CreateSessionRequest(name="kept"), metadata=token)
            ).session
        auth.stop()
        sessions.stop()
        auth, sessions = start("auth"), start("sessions")
        async with grpc.aio.insecure_channel(auth.addr) as a, grpc.aio.insecure_channel(sessions.addr) as s:
            auth_stub, sessions_stub = auth_pb2_grpc.AuthServiceStub(a), sessions_pb2_grpc.SessionServiceStub(s)
            # The token minted before the restart still verifies: same keys.
            me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=token)
            assert me.user.email == email
            assert [k.kid for k in (await auth_stub.GetJwks(auth_pb2.GetJwksRequest())).keys] == kids
            await auth_stub.Login(auth_pb2.LoginRequest(email=email, password=MeshUser.PASSWORD))
            got = await sessions_stub.GetSession(
                sessions_pb2.GetSessionRequest(session_id=session.session_id), metadata=token
            )
            assert got.session.name == "kept"
    finally:
        for child in (auth, sessions):
            child.stop()
        mesh.processes.pop("auth-restart", None)
        mesh.processes.pop("sessions-restart", None)


async def test_rotated_keys_keep_verifying_old_tokens(mesh: Mesh, auth_stub, user: MeshUser) -> None:
    before = [k.kid for k in (await auth_stub.GetJwks(auth_pb2.GetJwksRequest())).keys]
    rotate = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.auth", "rotate-keys"],
        cwd=ROOT,
        env=mesh.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rotate.returncode == 0, rotate.stderr
    new_kid = rotate.stdout.split("new signing key ", 1)[1].split(";", 1)[0]
    # The running auth service picks the new key up on an unknown kid or its periodic
    # reload; a fresh instance loads it at start.
    fresh = mesh.start_service("auth", instance="-rotated")
    try:
        async with grpc.aio.insecure_channel(fresh.addr) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            published = [k.kid for k in (await stub.GetJwks(auth_pb2.GetJwksRequest())).keys]
            assert published[0] == new_kid
            assert set(before) <= set(published)
            login = await stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
            assert login.access_token.split(".")[0]
            assert jwt.get_unverified_header(login.access_token)["kid"] == new_kid
            # The token signed by the retired key still works everywhere.
            me = await stub.GetMe(auth_pb2.GetMeRequest(), metadata=user.metadata)
            assert me.user.id == user.user_id
        # And the long-running instance accepts tokens signed by the new key.
        me = await auth_stub.GetMe(
            auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {login.access_token}"),)
        )
        assert me.user.id == user.user_id
    finally:
        fresh.stop()
        mesh.processes.pop("auth-rotated", None)


async def test_logs_carry_the_request_id_and_the_user_id(mesh: Mesh, auth_stub, user: MeshUser) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    with pytest.raises(grpc.aio.AioRpcError):
        # An authenticated call that fails (Logout became public: it needs only the refresh token).
        await auth_stub.SetUserRoles(
            auth_pb2.SetUserRolesRequest(user_id=user.user_id, roles=["admin"]),
            metadata=(*user.metadata, ("x-request-id", request_id)),
        )
    log_path = mesh.log_dir / "auth.log"

    async def logged() -> list[str]:
        lines = [line for line in log_path.read_text().splitlines() if request_id in line]
        assert lines, "no log line carries the request id"
        return lines

    lines = await eventually(logged, timeout_s=5, interval_s=0.1)
    assert "rpc_failed" in lines[0]
    assert user.user_id in lines[0]
    assert user.access_token not in log_path.read_text()
