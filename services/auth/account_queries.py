"""Accounts: users with their roles, the audit trail of role changes, and the failed logins
the throttle counts per account."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from runtime.errors import AlreadyExists
from services.auth.store_connection import StoreConnection

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


class AccountQueries(StoreConnection):
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
