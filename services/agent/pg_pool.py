"""psycopg pools for the agent's own Postgres work (checkpoints, run locks)."""

from __future__ import annotations

import math
import select
import time
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from runtime.database import client_statement_timeout_s, retry_connect
from runtime.settings import CommonSettings

OPEN_TIMEOUT_S = 30.0
DEDICATED_CONNECT_TIMEOUT_S = 10
# A connection back in the pool less than this long ago, with nothing from the server waiting
# on its socket, is lent without a check: under load every checkout would otherwise cost a
# round trip of its own (a turn makes a dozen).
RECHECK_IDLE_S = 1.0


async def ensure_schema(url: str, schema: str, *, connect_timeout_s: float = OPEN_TIMEOUT_S) -> None:
    # The first connection of the agent's start: a database still starting is retried
    # (runtime/database.py retry_connect) instead of crash-looping the pod.
    conn = await retry_connect(
        lambda: psycopg.AsyncConnection.connect(url, autocommit=True), timeout_s=connect_timeout_s, what=schema
    )
    async with conn:
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


class BoundedConnection(psycopg.AsyncConnection[Any]):
    """A connection whose every round trip gives up after `call_timeout_s` (None: no bound).

    statement_timeout alone bounds nothing when the server is frozen (SIGSTOP, a stalled
    disk, a partition with the socket still open): the client must stop waiting itself. A
    round trip that overstays leaves the connection in an unknown state, so it is closed
    (the pool drops it and opens a fresh one) and the caller gets an OperationalError,
    which the interceptor answers UNAVAILABLE (DATABASE_UNAVAILABLE)."""

    call_timeout_s: float | None = None
    # When the pool last took it back (pool `reset` hook): recently used connections skip the check.
    returned_at: float = 0.0

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:  # noqa: ASYNC109 (psycopg's signature)
        bound = self.call_timeout_s if timeout is None else timeout
        try:
            return await super().wait(gen, interval, bound)
        except psycopg.errors.OperationalError as exc:
            # psycopg's internal wait timeout (errors._WaitTimeout) has no public name.
            if timeout is None and bound is not None and type(exc).__name__ == "_WaitTimeout":
                self.pgconn.finish()
                raise psycopg.OperationalError(f"the database did not answer within {bound:g}s") from exc
            raise


async def _mark_returned(conn: psycopg.AsyncConnection[Any]) -> None:
    conn.returned_at = time.monotonic()  # type: ignore[attr-defined]


def _nothing_waiting(conn: psycopg.AsyncConnection[Any]) -> bool:
    """An idle connection the server ended (a restart, an admin kill) has its goodbye or EOF
    waiting on the socket; a live idle one has nothing. Looking costs no round trip."""
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


async def _check_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    recent = time.monotonic() - getattr(conn, "returned_at", 0.0) < RECHECK_IDLE_S
    if not (recent and _nothing_waiting(conn)):
        await AsyncConnectionPool.check_connection(conn)


def bounded_connection_class(call_timeout_s: float | None) -> type[BoundedConnection]:
    return type("BoundedConnection", (BoundedConnection,), {"call_timeout_s": call_timeout_s})


async def open_pool(
    url: str,
    *,
    name: str,
    min_size: int,
    max_size: int,
    timeout_s: float,
    search_path: str | None = None,
    bounds: CommonSettings | None = None,
    **connection_kwargs: Any,
) -> AsyncConnectionPool:
    """`bounds`: the DB_* waits (statement, connect attempt) every connection keeps; the pool
    also checks a connection idle for a while before lending it, so connections a restarted
    database dropped are replaced unseen."""
    # autocommit, and no server-side prepared statements so transaction poolers
    # (pgbouncer) can sit in between.
    kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None, **connection_kwargs}
    options = [f"-c search_path={search_path}"] if search_path else []
    connection_class: type[psycopg.AsyncConnection[Any]] = psycopg.AsyncConnection
    if bounds is not None:
        options.append(f"-c statement_timeout={int(bounds.db_statement_timeout_s * 1000)}")
        kwargs["connect_timeout"] = max(2, math.ceil(bounds.db_connect_attempt_timeout_s))
        connection_class = bounded_connection_class(client_statement_timeout_s(bounds))
    if options:
        kwargs["options"] = " ".join(options)
    pool = AsyncConnectionPool(
        url,
        connection_class=connection_class,
        min_size=min(min_size, max_size),
        max_size=max_size,
        timeout=timeout_s,
        kwargs=kwargs,
        name=name,
        check=_check_if_idle if bounds is not None else None,
        reset=_mark_returned if bounds is not None else None,
        open=False,
    )
    await pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
    return pool


async def ping_pool(pool: AsyncConnectionPool) -> None:
    """The health probe's ping: a pooled connection (checked at checkout) and one statement."""
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")


async def dedicated_connection(url: str) -> psycopg.AsyncConnection:
    """A dedicated autocommit connection, never pooled: what it holds (LISTEN) belongs to
    its database session."""
    # A bounded connect: the listener reconnecting to a frozen database must not hang for good.
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, prepare_threshold=None, connect_timeout=DEDICATED_CONNECT_TIMEOUT_S
    )
