"""Database access every service shares: SQLAlchemy 2 async on asyncpg, one schema per
service, Alembic migrations applied at start-up (serialised across replicas)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from runtime.embedded_pg import embedded_database_url
from runtime.logging import get_logger
from runtime.settings import CommonSettings

log = get_logger(__name__)

T = TypeVar("T")
# SQLSTATEs that end the retry at once: wrong credentials (class 28) or database (3D000)
# do not fix themselves while the pod waits.
_PERMANENT_SQLSTATE_PREFIXES = ("28", "3D")
# Connection exceptions (08), `the database system is starting up`, too many connections.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P03", "53300")
# Driver errors raised before any SQLSTATE exists (libpq/asyncpg connect failures).
_TRANSIENT_ERROR_NAMES = {"OperationalError", "InterfaceError", "ConnectionDoesNotExistError"}
# A connection back in the pool less than this long ago is lent without a ping (see ping_when_idle).
PING_IDLE_S = 1.0


def _is_transient_connect_error(exc: BaseException) -> bool:
    """True for failures a starting or briefly unreachable database produces: refused or
    reset connections, DNS not yet resolvable, timeouts, `the database system is starting
    up` (57P03), too many connections (53300). asyncpg, psycopg and SQLAlchemy's wrappers
    alike (the chain is walked for the driver's SQLSTATE)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    transient = False
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_PERMANENT_SQLSTATE_PREFIXES):
            return False
        if (
            isinstance(current, OSError)
            or (isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES))
            or type(current).__name__ in _TRANSIENT_ERROR_NAMES
        ):
            transient = True
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return transient


async def retry_connect(connect: Callable[[], Awaitable[T]], *, timeout_s: float, what: str = "database") -> T:
    """`connect()` until it succeeds, with exponential backoff (0.5 s doubling to 5 s), for at
    most `timeout_s`; a Kubernetes pod starting next to its database must not crash-loop."""
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    attempt = 1
    while True:
        try:
            return await connect()
        except Exception as exc:
            remaining = deadline - time.monotonic()
            if not _is_transient_connect_error(exc) or remaining <= 0:
                raise
            log.warning("database_connect_retry", what=what, attempt=attempt, error=str(exc)[:200], retry_in_s=delay)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)
            attempt += 1


async def resolve_database_url(settings: CommonSettings) -> str:
    """The libpq URL of the database: DATABASE_URL, or the embedded server."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return await asyncio.to_thread(embedded_database_url, settings.data_dir)


# The client waits this much longer than statement_timeout, so a live server's own
# cancel (a clear 57014) normally comes first.
CLIENT_TIMEOUT_MARGIN_S = 1.0


def client_statement_timeout_s(settings: CommonSettings) -> float:
    """How long a client waits for one statement's answer before dropping the connection."""
    return settings.db_statement_timeout_s + CLIENT_TIMEOUT_MARGIN_S


def database_wait_bound_s(settings: CommonSettings) -> float:
    """The longest one database call can wait before it fails (UNAVAILABLE): a free pooled
    connection (DB_POOL_TIMEOUT_S), its check at checkout (one statement), a replacement
    connection (DB_CONNECT_ATTEMPT_TIMEOUT_S), then the statement itself."""
    return settings.db_pool_timeout_s + settings.db_connect_attempt_timeout_s + 2 * client_statement_timeout_s(settings)


def with_driver(url: str, driver: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "postgres":
        scheme = "postgresql"
    return urlunsplit((f"{scheme}+{driver}", *parts[1:]))


@dataclass
class Database:
    url: str
    schema: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))


def ping_when_idle(engine: AsyncEngine, idle_s: float = PING_IDLE_S) -> None:
    """SQLAlchemy's pool_pre_ping, for connections idle at least `idle_s` only: under load
    the pre-ping doubled the round trips of every request, on connections used a moment ago.
    A connection the server ended is seen closed without a ping; a dead one found at
    checkout is replaced (DisconnectionError: the pool opens another)."""
    sync_engine = engine.sync_engine

    def fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    def lent(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # asyncpg reads every connection's socket all the time: one the server ended is
        # already closed here, with no round trip.
        closed = record.driver_connection is None or record.driver_connection.is_closed()
        if not closed and time.monotonic() - record.info.get("returned_at", 0.0) < idle_s:
            return
        try:
            alive = sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("the pooled connection did not answer its ping") from exc
        if not alive:
            raise DisconnectionError("the pooled connection did not answer its ping")

    event.listen(sync_engine.pool, "connect", fresh)
    event.listen(sync_engine.pool, "checkin", fresh)
    event.listen(sync_engine.pool, "checkout", lent)


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose statements each commit on their own, for a single read (or a
    single-statement write): connect() would wrap it in BEGIN and ROLLBACK, two more round
    trips for nothing on a hot path."""
    async with engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


async def open_database(settings: CommonSettings, *, schema: str, migrations: Path | None) -> Database:
    url = await resolve_database_url(settings)
    engine = create_async_engine(
        with_driver(url, "asyncpg"),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        # A connection the database dropped (a restart) is replaced at checkout, unseen by
        # callers: ping_when_idle below, not pool_pre_ping.
        pool_recycle=1800,
        # Statement errors would otherwise carry the bound values (user text) into the logs.
        hide_parameters=True,
        connect_args={
            "server_settings": {
                "search_path": f"{schema},public",
                "application_name": schema,
                "statement_timeout": str(int(settings.db_statement_timeout_s * 1000)),
            },
            # asyncpg's own bounds: one connection attempt, and every command on the client
            # side (a frozen server enforces no statement_timeout). The pre-ping is a command.
            "timeout": settings.db_connect_attempt_timeout_s,
            "command_timeout": client_statement_timeout_s(settings),
        },
    )
    ping_when_idle(engine)
    database = Database(url=url, schema=schema, engine=engine, sessions=async_sessionmaker(engine))
    try:
        await retry_connect(database.ping, timeout_s=settings.db_connect_timeout_s, what=schema)
    except BaseException:
        await engine.dispose()
        raise
    if migrations is not None and settings.db_migrate_on_start:
        await migrate(database, migrations)
    return database


async def migrate(database: Database, migrations: Path) -> None:
    """Upgrades the service's schema to head. Replicas starting together take turns on
    an advisory lock, so each migration runs once."""
    # Its own engine, without the serving timeouts: a migration may build an index for minutes,
    # and waits on the lock while another replica migrates.
    engine = create_async_engine(
        with_driver(database.url, "asyncpg"),
        poolclass=NullPool,
        hide_parameters=True,
        connect_args={
            "server_settings": {
                "search_path": f"{database.schema},public",
                "application_name": f"{database.schema}-migrate",
                "statement_timeout": "0",
            }
        },
    )
    try:
        await _migrate_on(engine, database.schema, migrations)
    finally:
        await engine.dispose()
    log.info("database_migrated", schema=database.schema)


async def _migrate_on(engine: AsyncEngine, schema: str, migrations: Path) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": f"migrate:{schema}"})
        try:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.commit()
            await conn.run_sync(_upgrade, schema, migrations)
            await conn.commit()
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": f"migrate:{schema}"})
            await conn.commit()


def _upgrade(connection: Connection, schema: str, migrations: Path) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    command.upgrade(config, "head")


def run_migrations_in_env() -> None:
    """Body of every service's `migrations/env.py` (online mode on our connection)."""
    from alembic import context

    connection = context.config.attributes["connection"]
    schema = context.config.attributes["schema"]
    context.configure(connection=connection, version_table_schema=schema, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
