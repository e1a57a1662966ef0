"""Database access every service shares: SQLAlchemy 2 async on asyncpg, one schema per
service, Alembic migrations applied at start-up (serialised across replicas)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from services.common.embedded_pg import embedded_database_url
from services.common.logging import get_logger
from services.common.settings import CommonSettings

log = get_logger(__name__)


async def resolve_database_url(settings: CommonSettings) -> str:
    """The libpq URL of the database: DATABASE_URL, or the embedded server."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return await asyncio.to_thread(embedded_database_url, settings.data_dir)


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
    sessions: async_sessionmaker

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))


async def open_database(settings: CommonSettings, *, schema: str, migrations: Path | None) -> Database:
    url = await resolve_database_url(settings)
    engine = create_async_engine(
        with_driver(url, "asyncpg"),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=True,
        pool_recycle=1800,
        # Statement errors would otherwise carry the bound values (user text) into the logs.
        hide_parameters=True,
        connect_args={"server_settings": {"search_path": f"{schema},public", "application_name": schema}},
    )
    database = Database(url=url, schema=schema, engine=engine, sessions=async_sessionmaker(engine))
    if migrations is not None and settings.db_migrate_on_start:
        await migrate(database, migrations)
    return database


async def migrate(database: Database, migrations: Path) -> None:
    """Upgrades the service's schema to head. Replicas starting together take turns on
    an advisory lock, so each migration runs once."""
    async with database.engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": f"migrate:{database.schema}"})
        try:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{database.schema}"'))
            await conn.commit()
            await conn.run_sync(_upgrade, database.schema, migrations)
            await conn.commit()
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": f"migrate:{database.schema}"})
            await conn.commit()
    log.info("database_migrated", schema=database.schema)


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
