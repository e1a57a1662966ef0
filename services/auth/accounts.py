"""Register, log in, refresh, log out: the rules of the auth service."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from email_validator import EmailNotValidError, validate_email

from services.auth.passwords import PasswordHasher, check_password_policy
from services.auth.store import AuthStore, UserRow
from services.auth.tokens import AccessTokenIssuer, IssuedTokens, hash_refresh_token, new_refresh_token
from services.common.errors import InvalidArgument, NotFound, Unauthenticated
from services.common.logging import get_logger

log = get_logger(__name__)

MAX_EMAIL_LENGTH = 254
PROFILE_CACHE_SIZE = 10_000
BAD_CREDENTIALS = "incorrect email or password"


def normalise_email(email: str) -> str:
    email = email.strip()
    if not email:
        raise InvalidArgument("email is required", reason="EMAIL_REQUIRED")
    if len(email) > MAX_EMAIL_LENGTH:
        raise InvalidArgument("email is too long", reason="EMAIL_INVALID")
    try:
        result = validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidArgument(f"email is not valid: {exc}", reason="EMAIL_INVALID") from None
    return result.normalized.lower()


class Accounts:
    def __init__(
        self,
        store: AuthStore,
        hasher: PasswordHasher,
        issuer: AccessTokenIssuer,
        *,
        admin_emails: list[str],
        refresh_ttl_s: int,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._issuer = issuer
        self._admin_emails = {e.lower() for e in admin_emails}
        self._refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self._profiles: OrderedDict[str, UserRow] = OrderedDict()

    def roles_for(self, email: str) -> list[str]:
        return ["user", "admin"] if email in self._admin_emails else ["user"]

    async def register(self, email: str, password: str) -> tuple[UserRow, IssuedTokens]:
        email = normalise_email(email)
        check_password_policy(password)
        password_hash = await self._hasher.hash(password)
        async with self._store.transaction() as tx:
            user = await tx.insert_user(email, password_hash)
            tokens = await self._issue(tx, user, family_id=None)
        log.info("user_registered", user_id=user.id)
        return user, tokens

    async def login(self, email: str, password: str) -> IssuedTokens:
        try:
            email = normalise_email(email)
        except InvalidArgument:
            email = ""
        user = await self._store.user_by_email(email) if email else None
        # Always pay for one bcrypt verification, so unknown emails and wrong
        # passwords cost the same time and give the same answer.
        if not await self._hasher.verify(password, user.password_hash if user else None) or user is None:
            log.info("login_failed")
            raise Unauthenticated(BAD_CREDENTIALS, reason="BAD_CREDENTIALS")
        async with self._store.transaction() as tx:
            tokens = await self._issue(tx, user, family_id=None)
        log.info("user_logged_in", user_id=user.id)
        return tokens

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        if not refresh_token:
            raise InvalidArgument("refresh_token is required", reason="REFRESH_TOKEN_REQUIRED")
        token_hash = hash_refresh_token(refresh_token)
        async with self._store.transaction() as tx:
            spent = await tx.spend_refresh_token(token_hash)
            if spent is not None and not spent.family_revoked and spent.expires_at > datetime.now(UTC):
                user = await tx.user_by_id(spent.user_id)
                if user is not None:
                    return await self._issue(tx, user, family_id=spent.family_id)
        if spent is None:
            await self._revoke_if_reused(token_hash)
        raise Unauthenticated("the refresh token is invalid, expired or revoked", reason="REFRESH_TOKEN_INVALID")

    async def _revoke_if_reused(self, token_hash: bytes) -> None:
        known = await self._store.find_refresh_token(token_hash)
        if known is not None and known.used:
            # A spent token came back: whoever holds the family may be an attacker
            # replaying a stolen token, so the whole family stops working.
            await self._store.revoke_family(known.family_id, "reuse")
            log.warning("refresh_token_reuse_detected", family_id=known.family_id, user_id=known.user_id)

    async def logout(self, user_id: str, refresh_token: str) -> None:
        if not refresh_token:
            raise InvalidArgument("refresh_token is required", reason="REFRESH_TOKEN_REQUIRED")
        known = await self._store.find_refresh_token(hash_refresh_token(refresh_token))
        if known is None or known.user_id != user_id:
            raise InvalidArgument("unknown refresh token", reason="REFRESH_TOKEN_INVALID")
        await self._store.revoke_family(known.family_id, "logout")
        log.info("user_logged_out", user_id=user_id)

    async def me(self, user_id: str) -> UserRow:
        # A profile (id, email, created_at) never changes once created, so a replica may
        # keep it: GetMe is the hottest authenticated read and needs no round trip.
        user = self._profiles.get(user_id)
        if user is None:
            user = await self._store.user_by_id(user_id)
            if user is None:
                raise NotFound("the account no longer exists", reason="USER_NOT_FOUND")
            self._profiles[user_id] = user
            if len(self._profiles) > PROFILE_CACHE_SIZE:
                self._profiles.popitem(last=False)
        return user

    async def _issue(self, tx: AuthStore, user: UserRow, *, family_id: str | None) -> IssuedTokens:
        now = datetime.now(UTC)
        # An Ed25519 signature takes microseconds: cheaper inline than a thread hop.
        access_token, access_expires = self._issuer.issue(
            user_id=user.id, email=user.email, roles=self.roles_for(user.email), now=now
        )
        if family_id is None:
            family_id = await tx.create_family(user.id)
        refresh_token = new_refresh_token()
        refresh_expires = (now + self._refresh_ttl).replace(microsecond=0)
        await tx.insert_refresh_token(hash_refresh_token(refresh_token), family_id, user.id, refresh_expires)
        return IssuedTokens(access_token, access_expires, refresh_token, refresh_expires, self._issuer.ttl_s)
