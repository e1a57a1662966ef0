"""Token state: revocations of access tokens, the signing keys that sign them, and the
refresh-token families that rotate them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text

from services.auth.store_connection import StoreConnection

INSERT_REVOCATION = text(
    "INSERT INTO token_revocations (kind, subject, not_before, expires_at)"
    " VALUES (:kind, :subject, :not_before, clock_timestamp() + CAST(:keep AS interval))"
    " RETURNING id, kind, subject, not_before, created_at, expires_at"
)
LIVE_REVOCATIONS = text(
    "SELECT id, kind, subject, not_before, created_at, expires_at FROM token_revocations"
    " WHERE expires_at > now() ORDER BY created_at"
)
# Rows are selected by creation time with an overlap (see RevocationLog): ids and
# creation times are assigned before commit, so they do not arrive in commit order.
REVOCATIONS_SINCE = text(
    "SELECT id, kind, subject, not_before, created_at, expires_at FROM token_revocations"
    " WHERE created_at > :since AND expires_at > now() ORDER BY created_at"
)
DELETE_EXPIRED_REVOCATIONS = text("DELETE FROM token_revocations WHERE expires_at < now() - interval '1 hour'")

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

INSERT_FAMILY = text(
    "INSERT INTO refresh_families (id, user_id, absolute_expires_at) VALUES (:id, :user_id, :absolute_expires_at)"
)
INSERT_REFRESH_TOKEN = text(
    "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at)"
    " VALUES (:token_hash, :family_id, :user_id, :expires_at)"
)
# Spending a token is one atomic UPDATE: of two concurrent refreshes with the same
# token exactly one wins; the other sees it spent and is treated as reuse.
SPEND_REFRESH_TOKEN = text(
    "UPDATE refresh_tokens t SET used_at = now() FROM refresh_families f"
    " WHERE t.token_hash = :token_hash AND t.used_at IS NULL AND f.id = t.family_id"
    " RETURNING t.family_id, t.user_id, t.expires_at, f.revoked_at, f.absolute_expires_at"
)
# The predecessor's sealed copy of this token is useless once this token is spent.
FORGET_SEALED_SUCCESSOR = text("UPDATE refresh_tokens SET sealed_successor = NULL WHERE successor_hash = :token_hash")
SET_SUCCESSOR = text(
    "UPDATE refresh_tokens SET successor_hash = :successor_hash, sealed_successor = :sealed"
    " WHERE token_hash = :token_hash"
)
REFRESH_TOKEN_BY_HASH = text(
    "SELECT t.family_id, t.user_id, t.used_at, f.revoked_at, t.sealed_successor, s.used_at AS successor_used_at,"
    " now() - t.used_at AS spent_ago"
    " FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id"
    " LEFT JOIN refresh_tokens s ON s.token_hash = t.successor_hash WHERE t.token_hash = :token_hash"
)
REVOKE_FAMILY = text(
    "UPDATE refresh_families SET revoked_at = now(), revoked_reason = :reason WHERE id = :id AND revoked_at IS NULL"
    " RETURNING id"
)
REVOKE_FAMILIES_OF_USER = text(
    "UPDATE refresh_families SET revoked_at = now(), revoked_reason = :reason"
    " WHERE user_id = :user_id AND revoked_at IS NULL"
    " AND (absolute_expires_at IS NULL OR absolute_expires_at > now()) RETURNING id"
)


@dataclass(frozen=True)
class RevocationRow:
    id: int
    kind: str
    subject: str
    not_before: datetime | None
    created_at: datetime
    expires_at: datetime


def _revocation(row) -> RevocationRow:
    return RevocationRow(row.id, row.kind, str(row.subject), row.not_before, row.created_at, row.expires_at)


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
    absolute_expires_at: datetime | None


@dataclass(frozen=True)
class KnownRefreshToken:
    family_id: str
    user_id: str
    used: bool
    family_revoked: bool
    sealed_successor: bytes | None = None
    successor_used: bool = False
    spent_ago_s: float | None = None


class TokenQueries(StoreConnection):
    async def insert_revocation(
        self, kind: str, subject: str, keep: timedelta, not_before: datetime | None = None
    ) -> RevocationRow:
        params = {"kind": kind, "subject": uuid.UUID(subject), "not_before": not_before, "keep": keep}
        async with self._connection() as conn:
            return _revocation((await conn.execute(INSERT_REVOCATION, params)).one())

    async def live_revocations(self) -> list[RevocationRow]:
        async with self._connection() as conn:
            return [_revocation(row) for row in (await conn.execute(LIVE_REVOCATIONS)).all()]

    async def revocations_since(self, since: datetime) -> list[RevocationRow]:
        async with self._connection() as conn:
            return [_revocation(row) for row in (await conn.execute(REVOCATIONS_SINCE, {"since": since})).all()]

    async def delete_expired_revocations(self) -> None:
        async with self._connection() as conn:
            await conn.execute(DELETE_EXPIRED_REVOCATIONS)

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

    async def create_family(self, user_id: str, absolute_expires_at: datetime) -> str:
        family_id = uuid.uuid4()
        params = {"id": family_id, "user_id": uuid.UUID(user_id), "absolute_expires_at": absolute_expires_at}
        async with self._connection() as conn:
            await conn.execute(INSERT_FAMILY, params)
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
            if row is not None:
                await conn.execute(FORGET_SEALED_SUCCESSOR, {"token_hash": token_hash})
        if row is None:
            return None
        return SpentRefreshToken(
            str(row.family_id), str(row.user_id), row.expires_at, row.revoked_at is not None, row.absolute_expires_at
        )

    async def set_successor(self, token_hash: bytes, successor_hash: bytes, sealed: bytes) -> None:
        params = {"token_hash": token_hash, "successor_hash": successor_hash, "sealed": sealed}
        async with self._connection() as conn:
            await conn.execute(SET_SUCCESSOR, params)

    async def find_refresh_token(self, token_hash: bytes) -> KnownRefreshToken | None:
        async with self._connection() as conn:
            row = (await conn.execute(REFRESH_TOKEN_BY_HASH, {"token_hash": token_hash})).first()
        if row is None:
            return None
        used, revoked = row.used_at is not None, row.revoked_at is not None
        return KnownRefreshToken(
            str(row.family_id),
            str(row.user_id),
            used,
            revoked,
            sealed_successor=row.sealed_successor,
            successor_used=row.successor_used_at is not None,
            spent_ago_s=row.spent_ago.total_seconds() if row.spent_ago is not None else None,
        )

    async def revoke_family(self, family_id: str, reason: str) -> bool:
        """Whether this call revoked it (False: unknown or already revoked)."""
        async with self._connection() as conn:
            row = (await conn.execute(REVOKE_FAMILY, {"id": uuid.UUID(family_id), "reason": reason})).first()
        return row is not None

    async def revoke_families_of_user(self, user_id: str, reason: str) -> list[str]:
        params = {"user_id": uuid.UUID(user_id), "reason": reason}
        async with self._connection() as conn:
            rows = (await conn.execute(REVOKE_FAMILIES_OF_USER, params)).all()
        return [str(row.id) for row in rows]
