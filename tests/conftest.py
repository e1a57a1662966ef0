"""The mesh every integration test talks to: real processes on loopback, the embedded
Postgres, the offline LLM server. Started once per test run; tests that restart or
kill a process start their own extra instance with `mesh.start_service(...)`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from meshctl.mesh import Mesh
from runtime.registry import start_order
from tests.support.auth import ADMIN_EMAIL, run_auth_command
from tests.support.mesh import TEST_ENV
from tests.support.users import MeshUser, register_user


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("mesh")
    mesh = Mesh(data_dir=base / "data", log_dir=base / "logs", ephemeral_ports=True, extra_env=TEST_ENV)
    # MESH_ONLY=auth,sessions starts a subset, for a quick run of one area's tests.
    only = [name for name in os.environ.get("MESH_ONLY", "").split(",") if name] or None
    try:
        mesh.start(only)
        if only is None:
            # The launcher starts only the services whose module exists; without MESH_ONLY a
            # missing (renamed) one must fail here, not turn its tests into skips.
            missing = {entry.name for entry in start_order()} - set(mesh.processes)
            assert not missing, f"the mesh started without {sorted(missing)}"
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


# Databases (one per mesh) where ADMIN_EMAIL has been made admin already.
_admins_granted: set[str] = set()


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
