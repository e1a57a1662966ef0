"""psycopg pools for the agent's own Postgres work (checkpoints, run locks)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

OPEN_TIMEOUT_S = 30.0


async def ensure_schema(url: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
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


async def lock_connection(url: str) -> psycopg.AsyncConnection:
    """A dedicated autocommit connection for advisory locks (never pooled: its locks
    belong to the database session)."""
    return await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
