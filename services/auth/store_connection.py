"""Where an auth store query runs: in the transaction a caller opened (`AuthStore.transaction`),
or else in a transaction of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class StoreConnection:
    def __init__(self, engine: AsyncEngine, conn: AsyncConnection | None = None) -> None:
        self._engine = engine
        self._conn = conn

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        if self._conn is not None:
            yield self._conn
        else:
            async with self._engine.begin() as conn:
                yield conn
