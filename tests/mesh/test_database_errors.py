"""Which failures mean "the database is not answering" (UNAVAILABLE, DATABASE_UNAVAILABLE) and
which are bugs or bad statements (INTERNAL): the errors are the real drivers' own, raised by
connecting to a port where nothing listens."""

from __future__ import annotations

import socket

import asyncpg
import grpc
import psycopg
import pytest
import sqlalchemy.exc
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from runtime.database_errors import database_unavailable
from runtime.errors import InvalidArgument, Unavailable, error_from_rpc


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def raised(awaitable: object) -> BaseException:
    try:
        await awaitable  # type: ignore[misc]
    except Exception as exc:
        return exc
    raise AssertionError("expected a failure")


async def test_refused_connections_of_every_driver_are_unavailable(closed_port: int) -> None:
    url = f"postgresql://nobody@127.0.0.1:{closed_port}/nothing"
    psycopg_error = await raised(psycopg.AsyncConnection.connect(url, connect_timeout=2))
    asyncpg_error = await raised(asyncpg.connect(url, timeout=2))
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://"))

    async def query() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    sqlalchemy_error = await raised(query())
    await engine.dispose()
    for error in (psycopg_error, asyncpg_error, sqlalchemy_error):
        assert database_unavailable(error), repr(error)


async def test_a_pool_that_cannot_lend_a_connection_in_time_is_unavailable(closed_port: int) -> None:
    pool = AsyncConnectionPool(
        f"postgresql://nobody@127.0.0.1:{closed_port}/nothing", min_size=0, max_size=1, timeout=0.3, open=False
    )
    await pool.open(wait=False)
    try:
        error = await raised(pool.getconn())
    finally:
        await pool.close()
    assert isinstance(error, PoolTimeout) and database_unavailable(error)


def test_server_codes_decide_when_the_server_answered() -> None:
    # statement_timeout (57014) and admin shutdown (57P01): the database's own outage signals.
    assert database_unavailable(psycopg.errors.QueryCanceled())
    assert database_unavailable(psycopg.errors.AdminShutdown())
    # A constraint or a bad statement is not an outage, even wrapped by SQLAlchemy.
    assert not database_unavailable(psycopg.errors.UniqueViolation())
    assert not database_unavailable(sqlalchemy.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation()))
    assert not database_unavailable(psycopg.errors.UndefinedTable())
    assert database_unavailable(sqlalchemy.exc.OperationalError("SELECT", {}, psycopg.OperationalError("gone")))


def test_timeouts_and_socket_errors_outside_the_drivers_are_not_database_outages() -> None:
    """An LLM call timing out, or an HTTP client's refused connection, is some other failure."""
    for error in (TimeoutError(), ConnectionRefusedError(), ValueError("x"), InvalidArgument("bad")):
        try:
            raise error
        except Exception as caught:
            assert not database_unavailable(caught)


def test_an_upstream_deadline_is_relayed_as_unavailable() -> None:
    """Deadlines are not propagated: an upstream's DEADLINE_EXCEEDED is the hop's own timeout,
    not the caller's deadline (which it would otherwise be taken for)."""
    upstream = grpc.aio.AioRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), details="Deadline Exceeded"
    )
    relayed = error_from_rpc(upstream, what="the sessions service")
    assert isinstance(relayed, Unavailable) and relayed.code == grpc.StatusCode.UNAVAILABLE
