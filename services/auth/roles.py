"""Roles: stored per user, changed only by an operator command or an admin, audited.

Registration never grants anything but `user`. Every change writes a `role_changes`
row (who, when, old, new) in the same transaction, and refuses the user's earlier
access tokens (they carry the old roles); the next refresh carries the new ones.
"""

from __future__ import annotations

import uuid

from runtime.errors import InvalidArgument, NotFound
from runtime.logging import get_logger
from services.auth.account_queries import UserRow
from services.auth.accounts import normalise_email
from services.auth.revocations import RevocationLog
from services.auth.store import AuthStore

log = get_logger(__name__)

BASE_ROLE = "user"
KNOWN_ROLES = ("user", "admin")
MAX_ROLES = 16


def normalise_roles(roles: list[str]) -> list[str]:
    if len(roles) > MAX_ROLES:
        raise InvalidArgument(f"at most {MAX_ROLES} roles", reason="ROLE_UNKNOWN")
    unknown = sorted({r for r in roles if r not in KNOWN_ROLES})
    if unknown:
        raise InvalidArgument(f"unknown role {unknown[0]!r}; roles are {', '.join(KNOWN_ROLES)}", reason="ROLE_UNKNOWN")
    # `user` is every account's base role; the order is fixed so equal sets compare equal.
    wanted = {BASE_ROLE, *roles}
    return [role for role in KNOWN_ROLES if role in wanted]


class Roles:
    def __init__(self, store: AuthStore, revocations: RevocationLog) -> None:
        self._store = store
        self._revocations = revocations

    async def set_roles(self, user_id: str, roles: list[str], *, actor: str) -> UserRow:
        try:
            uuid.UUID(user_id)
        except ValueError:
            raise InvalidArgument("user_id must be a UUID", reason="USER_ID_INVALID") from None
        new_roles = normalise_roles(roles)
        async with self._store.transaction() as tx:
            user = await tx.user_for_role_change(user_id)
            if user is None:
                raise NotFound("no such user", reason="USER_NOT_FOUND")
            if list(user.roles) == new_roles:
                return user
            changed = await tx.set_user_roles(user, new_roles, actor)
            await self._revocations.revoke_user(user.id, tx)
        log.info("user_roles_changed", user_id=user.id, actor=actor, old=list(user.roles), new=new_roles)
        return changed

    async def grant(self, email: str, role: str, *, actor: str) -> UserRow:
        user = await self._by_email(email)
        return await self.set_roles(user.id, [*user.roles, role], actor=actor)

    async def revoke(self, email: str, role: str, *, actor: str) -> UserRow:
        if role == BASE_ROLE:
            raise InvalidArgument(f"every account keeps the {BASE_ROLE!r} role", reason="ROLE_REQUIRED")
        normalise_roles([role])
        user = await self._by_email(email)
        return await self.set_roles(user.id, [r for r in user.roles if r != role], actor=actor)

    async def _by_email(self, email: str) -> UserRow:
        user = await self._store.user_by_email(normalise_email(email))
        if user is None:
            raise NotFound(f"no account with the email {email.strip()!r}", reason="USER_NOT_FOUND")
        return user
