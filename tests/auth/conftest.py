"""Extra processes and helpers for the auth tests: an auth replica with short limits,
a second sessions replica, direct reads of the auth schema."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentmesh.auth.v1 import auth_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from runtime.database import with_driver

T = TypeVar("T")

# An auth replica on the same database with limits a test can reach in seconds.
SHORT_LIMITS = {
    "REFRESH_REUSE_GRACE_S": "1",
    "REFRESH_ABSOLUTE_TTL_S": "4",
    "LOGIN_MAX_FAILURES": "3",
    "LOGIN_FAILURE_WINDOW_S": "60",
}


async def eventually(check: Callable[[], Awaitable[T]], *, timeout_s: float, interval_s: float = 0.05) -> T:
    """Polls `check` until it returns without raising AssertionError; re-raises the last one."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval_s)


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


async def role_changes(engine: AsyncEngine, user_id: str) -> list[tuple[str, list[str], list[str]]]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT actor, old_roles, new_roles, changed_at FROM role_changes WHERE user_id = :u ORDER BY id"),
                {"u": user_id},
            )
        ).all()
    assert all(row.changed_at is not None for row in rows)
    return [(row.actor, list(row.old_roles), list(row.new_roles)) for row in rows]
