"""psycopg pools for the agent's own Postgres work (checkpoints, run locks)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from services.common.database import retry_connect

OPEN_TIMEOUT_S = 30.0


async def ensure_schema(url: str, schema: str, *, connect_timeout_s: float = OPEN_TIMEOUT_S) -> None:
    # The first connection of the agent's start: a database still starting is retried
    # (services/common/database.py retry_connect) instead of crash-looping the pod.
    conn = await retry_connect(
        lambda: psycopg.AsyncConnection.connect(url, autocommit=True), timeout_s=connect_timeout_s, what=schema
    )
    async with conn:
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


async def open_pool(
    url: str,
    *,
    name: str,
    min_size: int,
    max_size: int,
    timeout_s: float,
    search_path: str | None = None,
    **connection_kwargs: Any,
) -> AsyncConnectionPool:
    # autocommit, and no server-side prepared statements so transaction poolers
    # (pgbouncer) can sit in between.
    kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None, **connection_kwargs}
    if search_path:
        kwargs["options"] = f"-c search_path={search_path}"
    pool = AsyncConnectionPool(
        url,
        min_size=min(min_size, max_size),
        max_size=max_size,
        timeout=timeout_s,
        kwargs=kwargs,
        name=name,
        open=False,
    )
    await pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
    return pool


async def dedicated_connection(url: str) -> psycopg.AsyncConnection:
    """A dedicated autocommit connection, never pooled: what it holds (LISTEN) belongs to
    its database session."""
    return await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
