"""The auth service's tables (schema `auth`) and every query on them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.errors import AlreadyExists

INSERT_USER = text(
    "INSERT INTO users (id, email, password_hash) VALUES (:id, :email, :password_hash) RETURNING id, email, created_at"
)
USER_BY_EMAIL = text("SELECT id, email, password_hash, created_at FROM users WHERE email = :email")
USER_BY_ID = text("SELECT id, email, password_hash, created_at FROM users WHERE id = :id")

SIGNING_KEY_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('auth:signing-keys'))")
ACTIVE_SIGNING_KEY = text(
    "SELECT kid, algorithm, sealed_private_key, public_jwk, created_at, retired_at FROM signing_keys"
    " WHERE retired_at IS NULL AND algorithm = :algorithm ORDER BY created_at DESC LIMIT 1"
)
INSERT_SIGNING_KEY = text(
    "INSERT INTO signing_keys (kid, algorithm, sealed_private_key, public_jwk)"
    " VALUES (:kid, :algorithm, :sealed, CAST(:jwk AS jsonb))"
)
RETIRE_SIGNING_KEY = text("UPDATE signing_keys SET retired_at = now() WHERE kid = :kid AND retired_at IS NULL")
# A retired key is published until the last token it signed has expired (plus a minute of skew).
PUBLISHABLE_SIGNING_KEYS = text(
    "SELECT kid, algorithm, sealed_private_key, public_jwk::text AS public_jwk, created_at, retired_at"
    " FROM signing_keys WHERE retired_at IS NULL OR retired_at > now() - CAST(:keep AS interval)"
    " ORDER BY created_at DESC"
)

INSERT_FAMILY = text("INSERT INTO refresh_families (id, user_id) VALUES (:id, :user_id)")
INSERT_REFRESH_TOKEN = text(
    "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at)"
    " VALUES (:token_hash, :family_id, :user_id, :expires_at)"
)
# Spending a token is one atomic UPDATE: of two concurrent refreshes with the same
# token exactly one wins; the other sees it spent and is treated as reuse.
SPEND_REFRESH_TOKEN = text(
    "UPDATE refresh_tokens t SET used_at = now() FROM refresh_families f"
    " WHERE t.token_hash = :token_hash AND t.used_at IS NULL AND f.id = t.family_id"
    " RETURNING t.family_id, t.user_id, t.expires_at, f.revoked_at"
)
REFRESH_TOKEN_BY_HASH = text(
    "SELECT t.family_id, t.user_id, t.used_at, f.revoked_at FROM refresh_tokens t"
    " JOIN refresh_families f ON f.id = t.family_id WHERE t.token_hash = :token_hash"
)
REVOKE_FAMILY = text(
    "UPDATE refresh_families SET revoked_at = now(), revoked_reason = :reason WHERE id = :id AND revoked_at IS NULL"
)


@dataclass(frozen=True)
class UserRow:
    id: str
    email: str
    password_hash: str
    created_at: datetime


@dataclass(frozen=True)
class SigningKeyRow:
    kid: str
    algorithm: str
    sealed_private_key: bytes
    public_jwk: str
    created_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True)
class SpentRefreshToken:
    family_id: str
    user_id: str
    expires_at: datetime
    family_revoked: bool


@dataclass(frozen=True)
class KnownRefreshToken:
    family_id: str
    user_id: str
    used: bool
    family_revoked: bool


class AuthStore:
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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AuthStore]:
        async with self._engine.begin() as conn:
            yield AuthStore(self._engine, conn)

    @asynccontextmanager
    async def signing_key_lock(self) -> AsyncIterator[AuthStore]:
        async with self._engine.begin() as conn:
            await conn.execute(SIGNING_KEY_LOCK)
            yield AuthStore(self._engine, conn)

    async def insert_user(self, email: str, password_hash: str) -> UserRow:
        try:
            async with self._connection() as conn:
                params = {"id": uuid.uuid4(), "email": email, "password_hash": password_hash}
                row = (await conn.execute(INSERT_USER, params)).one()
        except IntegrityError:
            raise AlreadyExists("an account with this email already exists", reason="EMAIL_TAKEN") from None
        return UserRow(str(row.id), row.email, password_hash, row.created_at)

    async def user_by_email(self, email: str) -> UserRow | None:
        async with self._connection() as conn:
            row = (await conn.execute(USER_BY_EMAIL, {"email": email})).first()
        return UserRow(str(row.id), row.email, row.password_hash, row.created_at) if row else None

    async def user_by_id(self, user_id: str) -> UserRow | None:
        async with self._connection() as conn:
            row = (await conn.execute(USER_BY_ID, {"id": uuid.UUID(user_id)})).first()
        return UserRow(str(row.id), row.email, row.password_hash, row.created_at) if row else None

    async def active_signing_key(self, algorithm: str) -> SigningKeyRow | None:
        async with self._connection() as conn:
            row = (await conn.execute(ACTIVE_SIGNING_KEY, {"algorithm": algorithm})).first()
        return SigningKeyRow(*row) if row else None

    async def insert_signing_key(self, kid: str, algorithm: str, sealed: bytes, jwk: str) -> None:
        async with self._connection() as conn:
            await conn.execute(INSERT_SIGNING_KEY, {"kid": kid, "algorithm": algorithm, "sealed": sealed, "jwk": jwk})

    async def retire_signing_key(self, kid: str) -> None:
        async with self._connection() as conn:
            await conn.execute(RETIRE_SIGNING_KEY, {"kid": kid})

    async def publishable_signing_keys(self, token_ttl: timedelta) -> list[SigningKeyRow]:
        async with self._connection() as conn:
            rows = (await conn.execute(PUBLISHABLE_SIGNING_KEYS, {"keep": token_ttl + timedelta(minutes=1)})).all()
        return [SigningKeyRow(*row) for row in rows]

    async def create_family(self, user_id: str) -> str:
        family_id = uuid.uuid4()
        async with self._connection() as conn:
            await conn.execute(INSERT_FAMILY, {"id": family_id, "user_id": uuid.UUID(user_id)})
        return str(family_id)

    async def insert_refresh_token(self, token_hash: bytes, family_id: str, user_id: str, expires_at: datetime) -> None:
        async with self._connection() as conn:
            await conn.execute(
                INSERT_REFRESH_TOKEN,
                {
                    "token_hash": token_hash,
                    "family_id": uuid.UUID(family_id),
                    "user_id": uuid.UUID(user_id),
                    "expires_at": expires_at,
                },
            )

    async def spend_refresh_token(self, token_hash: bytes) -> SpentRefreshToken | None:
        async with self._connection() as conn:
            row = (await conn.execute(SPEND_REFRESH_TOKEN, {"token_hash": token_hash})).first()
        if row is None:
            return None
        return SpentRefreshToken(str(row.family_id), str(row.user_id), row.expires_at, row.revoked_at is not None)

    async def find_refresh_token(self, token_hash: bytes) -> KnownRefreshToken | None:
        async with self._connection() as conn:
            row = (await conn.execute(REFRESH_TOKEN_BY_HASH, {"token_hash": token_hash})).first()
        if row is None:
            return None
        used, revoked = row.used_at is not None, row.revoked_at is not None
        return KnownRefreshToken(str(row.family_id), str(row.user_id), used, revoked)

    async def revoke_family(self, family_id: str, reason: str) -> None:
        async with self._connection() as conn:
            await conn.execute(REVOKE_FAMILY, {"id": uuid.UUID(family_id), "reason": reason})
