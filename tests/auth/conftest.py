"""Fixtures for the auth tests: an auth replica with short limits, a connection to the auth
schema, and the real signing key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentmesh.auth.v1 import auth_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from runtime.database import with_driver
from services.auth.keys import KeyCipher, KeyRing, SigningKey
from services.auth.settings import DEV_SIGNING_KEY_SECRET
from services.auth.store import AuthStore
from tests.support.auth import SHORT_LIMITS


@pytest.fixture(scope="module")
def short_auth(mesh: Mesh) -> Iterator[ChildProcess]:
    child = mesh.start_service("auth", instance="-short", **SHORT_LIMITS)
    yield child
    child.stop()


@pytest.fixture
async def short_auth_stub(short_auth: ChildProcess) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    async with grpc.aio.insecure_channel(short_auth.addr) as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel)


@pytest.fixture
async def auth_db(mesh: Mesh) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        with_driver(mesh.env["DATABASE_URL"], "asyncpg"), connect_args={"server_settings": {"search_path": "auth"}}
    )
    yield engine
    await engine.dispose()


@pytest.fixture
async def signing_key(mesh: Mesh) -> AsyncIterator[SigningKey]:
    """The auth service's current signing key, read from its database with the development secret."""
    engine = create_async_engine(
        with_driver(mesh.env["DATABASE_URL"], "asyncpg"), connect_args={"server_settings": {"search_path": "auth"}}
    )
    ring = KeyRing(
        AuthStore(engine), KeyCipher(DEV_SIGNING_KEY_SECRET), algorithm="EdDSA", token_ttl_s=900, rotation_days=30
    )
    await ring.reload()
    yield ring.signing_key()
    await engine.dispose()
