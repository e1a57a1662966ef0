"""The mesh every integration test talks to: real processes on loopback, the embedded
Postgres, the offline LLM server. Started once per test run; tests that restart or
kill a process start their own extra instance with `mesh.start_service(...)`."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.users import MeshUser, register_user

# Test-only speedups and limits: bcrypt at cost 4 (production requires >= 12) so a
# hundred registrations take milliseconds, and gateway rate limits high enough that
# only the rate-limit tests hit them.
TEST_ENV = {
    "APP_ENV": "test",
    "BCRYPT_ROUNDS": "4",
    "LOG_LEVEL": "INFO",
    "SHUTDOWN_GRACE_S": "10",
    # Every test client shares 127.0.0.1; tests of the limits start their own gateway.
    **{
        f"RATE_LIMIT_{route_class}": "100000 per minute"
        for route_class in ("DEFAULT", "READ", "CHAT", "CHAT_STREAM", "MESSAGES", "LOGIN", "REGISTER")
    },
}


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("mesh")
    mesh = Mesh(data_dir=base / "data", log_dir=base / "logs", ephemeral_ports=True, extra_env=TEST_ENV)
    # MESH_ONLY=auth,sessions starts a subset, for a quick run of one area's tests.
    only = [name for name in os.environ.get("MESH_ONLY", "").split(",") if name] or None
    try:
        mesh.start(only)
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture(scope="session")
def log_dir(mesh: Mesh) -> Path:
    return mesh.log_dir


@pytest.fixture
async def auth_channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.addr("auth")) as channel:
        yield channel


@pytest.fixture
def auth_stub(auth_channel: grpc.aio.Channel) -> auth_pb2_grpc.AuthServiceStub:
    return auth_pb2_grpc.AuthServiceStub(auth_channel)


@pytest.fixture
async def user(auth_stub: auth_pb2_grpc.AuthServiceStub) -> MeshUser:
    """A freshly registered user with a valid access token."""
    return await register_user(auth_stub)


@pytest.fixture
async def other_user(auth_stub: auth_pb2_grpc.AuthServiceStub) -> MeshUser:
    return await register_user(auth_stub)


ADMIN_EMAIL = "admin@example.com"
# Databases (one per mesh) where ADMIN_EMAIL has been made admin already.
_admins_granted: set[str] = set()


async def run_auth_command(mesh: Mesh, *args: str) -> tuple[int, str, str]:
    """Runs `python -m services.auth <args>` against the mesh's database."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.auth",
        *args,
        env=mesh.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def admin(mesh: Mesh, auth_stub: auth_pb2_grpc.AuthServiceStub) -> MeshUser:
    """An admin: registered like anyone (registration grants no role), made admin once
    with the operator command `grant-role`, then logged in."""
    email = ADMIN_EMAIL
    try:
        await register_user(auth_stub, email=email)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    if mesh.env["DATABASE_URL"] not in _admins_granted:
        code, _out, err = await run_auth_command(mesh, "grant-role", "--email", email, "--role", "admin")
        assert code == 0, err
        _admins_granted.add(mesh.env["DATABASE_URL"])
    login = await auth_stub.Login(auth_pb2.LoginRequest(email=email, password=MeshUser.PASSWORD))
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {login.access_token}")])
    return MeshUser(me.user.id, email, login.access_token, login.refresh_token)


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"
