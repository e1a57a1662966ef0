"""The auth service's tables (schema `auth`) and every query on them: `AuthStore` gathers the
account, token and deletion queries and opens the transactions that span them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text

from services.auth.account_queries import AccountQueries
from services.auth.deletion_queries import DeletionQueries
from services.auth.token_queries import TokenQueries

SIGNING_KEY_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('auth:signing-keys'))")


class AuthStore(AccountQueries, TokenQueries, DeletionQueries):
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AuthStore]:
        async with self._engine.begin() as conn:
            yield AuthStore(self._engine, conn)

    @asynccontextmanager
    async def signing_key_lock(self) -> AsyncIterator[AuthStore]:
        async with self._engine.begin() as conn:
            await conn.execute(SIGNING_KEY_LOCK)
            yield AuthStore(self._engine, conn)
