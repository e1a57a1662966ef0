"""The auth service's tables (schema `auth`) and every query on them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runtime.errors import AlreadyExists

INSERT_USER = text(
    "INSERT INTO users (id, email, password_hash) VALUES (:id, :email, :password_hash)"
    " RETURNING id, email, password_hash, created_at, roles"
)
USER_BY_EMAIL = text("SELECT id, email, password_hash, created_at, roles FROM users WHERE email = :email")
USER_BY_ID = text("SELECT id, email, password_hash, created_at, roles FROM users WHERE id = :id")
USER_FOR_ROLE_CHANGE = text("SELECT id, email, password_hash, created_at, roles FROM users WHERE id = :id FOR UPDATE")
SET_USER_ROLES = text(
    "UPDATE users SET roles = :roles WHERE id = :id RETURNING id, email, password_hash, created_at, roles"
)
INSERT_ROLE_CHANGE = text(
    "INSERT INTO role_changes (user_id, actor, old_roles, new_roles) VALUES (:user_id, :actor, :old, :new)"
)
ROLE_CHANGES_OF_USER = text(
    "SELECT actor, changed_at, old_roles, new_roles FROM role_changes WHERE user_id = :user_id ORDER BY id"
)

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

LOGIN_FAILURES_IN_WINDOW = text(
    "SELECT failed_at, now() AS now FROM login_failures"
    " WHERE account_key = :key AND failed_at > now() - CAST(:window AS interval) ORDER BY failed_at"
)
INSERT_LOGIN_FAILURE = text("INSERT INTO login_failures (account_key) VALUES (:key)")
FORGET_OLD_LOGIN_FAILURES = text(
    "DELETE FROM login_failures WHERE account_key = :key AND failed_at <= now() - CAST(:window AS interval)"
)
CLEAR_LOGIN_FAILURES = text("DELETE FROM login_failures WHERE account_key = :key")
# Failures of accounts nobody tries again (mistyped or unknown emails) are never read again.
FORGET_ALL_OLD_LOGIN_FAILURES = text("DELETE FROM login_failures WHERE failed_at <= now() - CAST(:window AS interval)")

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

# Account deletion: the auth share of the erasure, in the transaction that opens the job.
# Children are deleted before the rows they cascade from, so each is counted.
ERASE_FAMILY_REVOCATIONS = text(
    "DELETE FROM token_revocations WHERE kind = 'family'"
    " AND subject IN (SELECT id FROM refresh_families WHERE user_id = :user_id)"
)
# Earlier logout-all and role-change entries: the new one (written next) refuses more.
ERASE_USER_REVOCATIONS = text("DELETE FROM token_revocations WHERE kind = 'user' AND subject = :user_id")
ERASE_REFRESH_TOKENS = text("DELETE FROM refresh_tokens WHERE user_id = :user_id")
ERASE_REFRESH_FAMILIES = text("DELETE FROM refresh_families WHERE user_id = :user_id")
ERASE_ROLE_CHANGES = text("DELETE FROM role_changes WHERE user_id = :user_id")
# The audit trail of other users keeps what an erased admin did, under a pseudonym.
ANONYMISE_ROLE_ACTOR = text("UPDATE role_changes SET actor = :pseudonym WHERE actor = :actor")
ERASE_LOGIN_FAILURES = text("DELETE FROM login_failures WHERE account_key = :key")
ERASE_USER = text("DELETE FROM users WHERE id = :user_id")

DELETION_COLUMNS = "id, user_id, session_ids, state, receipt, attempts, create_time, complete_time"
INSERT_DELETION = text(
    "INSERT INTO account_deletions (id, user_key, user_id, receipt, revocation_id, next_attempt_at)"
    " VALUES (:id, :user_key, :user_id, CAST(:receipt AS jsonb), :revocation_id,"
    " clock_timestamp() + make_interval(secs => :delay_s))"
)
DELETION_BY_ID = text(f"SELECT {DELETION_COLUMNS} FROM account_deletions WHERE id = :id")  # noqa: S608
DELETION_BY_KEY = text(f"SELECT {DELETION_COLUMNS} FROM account_deletions WHERE user_key = :user_key")  # noqa: S608
# Every replica works the queue: SKIP LOCKED hands each due job to one of them, and the
# lease lets another replica take it over if this one dies mid-job.
CLAIM_DELETIONS = text(
    "UPDATE account_deletions SET locked_until = clock_timestamp() + make_interval(secs => :lease_s)"
    " WHERE id IN (SELECT id FROM account_deletions WHERE state = 'pending'"
    " AND next_attempt_at <= clock_timestamp() AND (locked_until IS NULL OR locked_until <= clock_timestamp())"
    " ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED)"
    " RETURNING id, user_id, session_ids, state, receipt, attempts, create_time, complete_time"
)
RECORD_DELETION_STEP = text(
    "UPDATE account_deletions"
    " SET receipt = receipt || jsonb_build_object(CAST(:store AS text), CAST(:counts AS jsonb)),"
    " session_ids = coalesce(:session_ids, session_ids) WHERE id = :id AND state = 'pending'"
)
DELETION_STEP_FAILED = text(
    "UPDATE account_deletions SET attempts = attempts + 1, last_error = :error, locked_until = NULL,"
    " next_attempt_at = clock_timestamp() + make_interval(secs => :delay_s) WHERE id = :id AND state = 'pending'"
)
# Done: what identifies the user goes; the keyed hash and the counts stay.
COMPLETE_DELETION = text(
    "UPDATE account_deletions SET state = 'done', user_id = NULL, session_ids = NULL, locked_until = NULL,"
    " last_error = '', complete_time = clock_timestamp() WHERE id = :id AND state = 'pending'"
)
# A deleted user's revocation must outlive their last access token, then it goes too.
FORGET_DELETION_REVOCATIONS = text(
    "WITH gone AS (DELETE FROM token_revocations r USING account_deletions d"
    " WHERE r.id = d.revocation_id AND r.expires_at <= clock_timestamp() RETURNING r.id)"
    " UPDATE account_deletions SET revocation_id = NULL WHERE revocation_id IN (SELECT id FROM gone)"
)


@dataclass(frozen=True)
class DeletionRow:
    id: str
    user_id: str | None
    session_ids: list[str]
    state: str
    receipt: dict[str, dict[str, int]]
    attempts: int
    create_time: datetime
    complete_time: datetime | None


def _deletion(row) -> DeletionRow:
    return DeletionRow(
        str(row.id),
        str(row.user_id) if row.user_id is not None else None,
        [str(s) for s in row.session_ids or ()],
        row.state,
        dict(row.receipt),
        row.attempts,
        row.create_time,
        row.complete_time,
    )


@dataclass(frozen=True)
class UserRow:
    id: str
    email: str
    password_hash: str
    created_at: datetime
    roles: tuple[str, ...] = ("user",)


def _user(row) -> UserRow:
    return UserRow(str(row.id), row.email, row.password_hash, row.created_at, tuple(row.roles))


@dataclass(frozen=True)
class RoleChange:
    actor: str
    changed_at: datetime
    old_roles: list[str]
    new_roles: list[str]


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
        return _user(row)

    async def user_by_email(self, email: str) -> UserRow | None:
        async with self._connection() as conn:
            row = (await conn.execute(USER_BY_EMAIL, {"email": email})).first()
        return _user(row) if row else None

    async def user_by_id(self, user_id: str) -> UserRow | None:
        async with self._connection() as conn:
            row = (await conn.execute(USER_BY_ID, {"id": uuid.UUID(user_id)})).first()
        return _user(row) if row else None

    async def user_for_role_change(self, user_id: str) -> UserRow | None:
        """The user, row-locked until the transaction ends (two role changes serialise)."""
        async with self._connection() as conn:
            row = (await conn.execute(USER_FOR_ROLE_CHANGE, {"id": uuid.UUID(user_id)})).first()
        return _user(row) if row else None

    async def set_user_roles(self, user: UserRow, roles: list[str], actor: str) -> UserRow:
        async with self._connection() as conn:
            row = (await conn.execute(SET_USER_ROLES, {"id": uuid.UUID(user.id), "roles": roles})).one()
            params = {"user_id": uuid.UUID(user.id), "actor": actor, "old": list(user.roles), "new": roles}
            await conn.execute(INSERT_ROLE_CHANGE, params)
        return _user(row)

    async def role_changes(self, user_id: str) -> list[RoleChange]:
        async with self._connection() as conn:
            rows = (await conn.execute(ROLE_CHANGES_OF_USER, {"user_id": uuid.UUID(user_id)})).all()
        return [RoleChange(r.actor, r.changed_at, list(r.old_roles), list(r.new_roles)) for r in rows]

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

    async def login_failures(self, key: bytes, window: timedelta) -> tuple[list[datetime], datetime]:
        """Failure times inside the window, oldest first, and the database's now."""
        async with self._connection() as conn:
            rows = (await conn.execute(LOGIN_FAILURES_IN_WINDOW, {"key": key, "window": window})).all()
            if not rows:
                now = (await conn.execute(text("SELECT now()"))).scalar_one()
                return [], now
        return [row.failed_at for row in rows], rows[0].now

    async def record_login_failure(self, key: bytes, window: timedelta) -> None:
        async with self._connection() as conn:
            await conn.execute(FORGET_OLD_LOGIN_FAILURES, {"key": key, "window": window})
            await conn.execute(INSERT_LOGIN_FAILURE, {"key": key})

    async def clear_login_failures(self, key: bytes) -> None:
        async with self._connection() as conn:
            await conn.execute(CLEAR_LOGIN_FAILURES, {"key": key})

    async def forget_old_login_failures(self, window: timedelta) -> None:
        async with self._connection() as conn:
            await conn.execute(FORGET_ALL_OLD_LOGIN_FAILURES, {"window": window})

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

    async def erase_account(self, user_id: str, account_key: bytes, actor_pseudonym: str) -> dict[str, int]:
        """Deletes the account and every auth row about it; rows per table."""
        owner = {"user_id": uuid.UUID(user_id)}
        async with self._connection() as conn:
            counts = {
                "token_revocations": (await conn.execute(ERASE_FAMILY_REVOCATIONS, owner)).rowcount
                + (await conn.execute(ERASE_USER_REVOCATIONS, owner)).rowcount,
                "refresh_tokens": (await conn.execute(ERASE_REFRESH_TOKENS, owner)).rowcount,
                "refresh_families": (await conn.execute(ERASE_REFRESH_FAMILIES, owner)).rowcount,
                "role_changes": (await conn.execute(ERASE_ROLE_CHANGES, owner)).rowcount,
                "role_changes_made_anonymised": (
                    await conn.execute(ANONYMISE_ROLE_ACTOR, {"actor": f"user:{user_id}", "pseudonym": actor_pseudonym})
                ).rowcount,
                "login_failures": (await conn.execute(ERASE_LOGIN_FAILURES, {"key": account_key})).rowcount,
                "users": (await conn.execute(ERASE_USER, owner)).rowcount,
            }
        return {table: int(count) for table, count in counts.items()}

    async def insert_deletion(
        self,
        deletion_id: str,
        user_key: bytes,
        user_id: str,
        receipt: dict[str, dict[str, int]],
        revocation_id: int,
        delay_s: float,
    ) -> None:
        params = {
            "id": uuid.UUID(deletion_id),
            "user_key": user_key,
            "user_id": uuid.UUID(user_id),
            "receipt": json.dumps(receipt),
            "revocation_id": revocation_id,
            "delay_s": delay_s,
        }
        async with self._connection() as conn:
            await conn.execute(INSERT_DELETION, params)

    async def deletion(self, deletion_id: str) -> DeletionRow | None:
        async with self._connection() as conn:
            row = (await conn.execute(DELETION_BY_ID, {"id": uuid.UUID(deletion_id)})).first()
        return _deletion(row) if row else None

    async def deletion_by_key(self, user_key: bytes) -> DeletionRow | None:
        async with self._connection() as conn:
            row = (await conn.execute(DELETION_BY_KEY, {"user_key": user_key})).first()
        return _deletion(row) if row else None

    async def claim_deletions(self, limit: int, lease_s: float) -> list[DeletionRow]:
        async with self._connection() as conn:
            rows = (await conn.execute(CLAIM_DELETIONS, {"limit": limit, "lease_s": lease_s})).all()
        return [_deletion(row) for row in rows]

    async def record_deletion_step(
        self, deletion_id: str, store: str, counts: dict[str, int], session_ids: list[str] | None = None
    ) -> None:
        params = {
            "id": uuid.UUID(deletion_id),
            "store": store,
            "counts": json.dumps(counts),
            "session_ids": [uuid.UUID(s) for s in session_ids] if session_ids is not None else None,
        }
        async with self._connection() as conn:
            await conn.execute(RECORD_DELETION_STEP, params)

    async def deletion_step_failed(self, deletion_id: str, error: str, delay_s: float) -> None:
        params = {"id": uuid.UUID(deletion_id), "error": error[:500], "delay_s": delay_s}
        async with self._connection() as conn:
            await conn.execute(DELETION_STEP_FAILED, params)

    async def complete_deletion(self, deletion_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(COMPLETE_DELETION, {"id": uuid.UUID(deletion_id)})

    async def forget_deletion_revocations(self) -> int:
        async with self._connection() as conn:
            return int((await conn.execute(FORGET_DELETION_REVOCATIONS)).rowcount)
