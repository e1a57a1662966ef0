"""Register, log in, refresh, log out: the rules of the auth service."""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from email_validator import EmailNotValidError, validate_email

from runtime.errors import InvalidArgument, NotFound, Unauthenticated
from runtime.logging import get_logger
from services.auth.account_queries import UserRow
from services.auth.keys import KeyCipher
from services.auth.passwords import PasswordHasher, check_password_policy
from services.auth.revocations import RevocationLog
from services.auth.store import AuthStore
from services.auth.throttle import LoginThrottle, account_key
from services.auth.token_queries import KnownRefreshToken
from services.auth.tokens import AccessTokenIssuer, IssuedTokens, hash_refresh_token, new_refresh_token

log = get_logger(__name__)

MAX_EMAIL_LENGTH = 254
PROFILE_CACHE_SIZE = 10_000
BAD_CREDENTIALS = "incorrect email or password"


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


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


class SuccessorSeal:
    """Seals the pair a rotation returned, so a replay within the grace period gets the
    very same pair. AES-GCM under a key derived from SIGNING_KEY_SECRET, bound to the
    spent token's hash: a database dump alone does not reveal a live refresh token."""

    def __init__(self, cipher: KeyCipher) -> None:
        self._cipher = cipher

    def seal(self, tokens: IssuedTokens, spent_hash: bytes) -> bytes:
        payload = {
            "access_token": tokens.access_token,
            "access_expires_at": tokens.access_expires_at.isoformat(),
            "refresh_token": tokens.refresh_token,
            "refresh_expires_at": tokens.refresh_expires_at.isoformat(),
            "expires_in": tokens.expires_in,
        }
        return self._cipher.seal(json.dumps(payload).encode(), spent_hash.hex())

    def open(self, sealed: bytes, spent_hash: bytes) -> IssuedTokens:
        payload = json.loads(self._cipher.open(sealed, spent_hash.hex()))
        return IssuedTokens(
            payload["access_token"],
            datetime.fromisoformat(payload["access_expires_at"]),
            payload["refresh_token"],
            datetime.fromisoformat(payload["refresh_expires_at"]),
            int(payload["expires_in"]),
        )


class Accounts:
    def __init__(
        self,
        store: AuthStore,
        hasher: PasswordHasher,
        issuer: AccessTokenIssuer,
        revocations: RevocationLog,
        throttle: LoginThrottle,
        seal: SuccessorSeal,
        *,
        refresh_ttl_s: int,
        refresh_absolute_ttl_s: int,
        refresh_reuse_grace_s: float,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._issuer = issuer
        self._revocations = revocations
        self._throttle = throttle
        self._seal = seal
        self._refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self._refresh_absolute_ttl = timedelta(seconds=refresh_absolute_ttl_s)
        self._reuse_grace_s = refresh_reuse_grace_s
        self._profiles: OrderedDict[str, UserRow] = OrderedDict()

    async def register(self, email: str, password: str) -> tuple[UserRow, IssuedTokens]:
        email = normalise_email(email)
        check_password_policy(password)
        password_hash = await self._hasher.hash(password)
        async with self._store.transaction() as tx:
            # Registration grants `user` only (the column default), whatever the email.
            user = await tx.insert_user(email, password_hash)
            tokens = await self._issue(tx, user)
        log.info("user_registered", user_id=user.id)
        return user, tokens

    async def login(self, email: str, password: str) -> IssuedTokens:
        try:
            email = normalise_email(email)
        except InvalidArgument:
            normalised = ""
        else:
            normalised = email
        key = account_key(email)
        earlier_failures = await self._throttle.check(key)
        user = await self._store.user_by_email(normalised) if normalised else None
        # Always pay for one bcrypt verification, so unknown emails and wrong
        # passwords cost the same time and give the same answer.
        if not await self._hasher.verify(password, user.password_hash if user else None) or user is None:
            await self._throttle.record_failure(key)
            log.info("login_failed")
            raise Unauthenticated(BAD_CREDENTIALS, reason="BAD_CREDENTIALS")
        if earlier_failures:
            await self._throttle.clear(key)
        async with self._store.transaction() as tx:
            tokens = await self._issue(tx, user)
        log.info("user_logged_in", user_id=user.id)
        return tokens

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        if not refresh_token:
            raise InvalidArgument("refresh_token is required", reason="REFRESH_TOKEN_REQUIRED")
        token_hash = hash_refresh_token(refresh_token)
        async with self._store.transaction() as tx:
            spent = await tx.spend_refresh_token(token_hash)
            now = datetime.now(UTC)
            if (
                spent is not None
                and not spent.family_revoked
                and spent.expires_at > now
                and (spent.absolute_expires_at is None or spent.absolute_expires_at > now)
            ):
                user = await tx.user_by_id(spent.user_id)
                if user is not None:
                    tokens = await self._issue(
                        tx, user, family_id=spent.family_id, absolute_expires_at=spent.absolute_expires_at
                    )
                    sealed = self._seal.seal(tokens, token_hash)
                    await tx.set_successor(token_hash, hash_refresh_token(tokens.refresh_token), sealed)
                    return tokens
        if spent is None:
            known = await self._store.find_refresh_token(token_hash)
            if known is not None and known.used:
                replayed = self._same_pair_within_grace(known, token_hash)
                if replayed is not None:
                    log.info("refresh_token_replay_within_grace", family_id=known.family_id)
                    return replayed
                await self._revoke_reused(known)
        raise Unauthenticated("the refresh token is invalid, expired or revoked", reason="REFRESH_TOKEN_INVALID")

    def _same_pair_within_grace(self, known: KnownRefreshToken, token_hash: bytes) -> IssuedTokens | None:
        """The pair the rotation returned, when this looks like the same client retrying:
        the replay comes within REFRESH_REUSE_GRACE_S of the rotation, the family is
        intact and the successor has never been used (so whoever got the new pair, if
        anyone, has not acted on it: a double submit or a lost response)."""
        if known.family_revoked or known.successor_used or known.sealed_successor is None:
            return None
        if known.spent_ago_s is None or known.spent_ago_s > self._reuse_grace_s:
            return None
        return self._seal.open(known.sealed_successor, token_hash)

    async def _revoke_reused(self, known: KnownRefreshToken) -> None:
        # A spent token came back: whoever holds the family may be an attacker
        # replaying a stolen token, so the whole family stops working, access tokens too.
        if await self._store.revoke_family(known.family_id, "reuse"):
            await self._revocations.revoke_family(known.family_id)
            log.warning("refresh_token_reuse_detected", family_id=known.family_id, user_id=known.user_id)

    async def logout(self, refresh_token: str) -> None:
        """Ends the refresh token's family. The refresh token is the credential: a client
        whose access token has expired can still sign out."""
        if not refresh_token:
            raise InvalidArgument("refresh_token is required", reason="REFRESH_TOKEN_REQUIRED")
        known = await self._store.find_refresh_token(hash_refresh_token(refresh_token))
        if known is None:
            raise InvalidArgument("unknown refresh token", reason="REFRESH_TOKEN_INVALID")
        if await self._store.revoke_family(known.family_id, "logout"):
            await self._revocations.revoke_family(known.family_id)
        log.info("user_logged_out", user_id=known.user_id)

    async def end_all_sessions(self, user_id: str, reason: str) -> int:
        """Ends every family of the user and refuses every access token issued so far.
        LogoutAll uses it; so must account deletion. Returns the families ended."""
        families = await self._store.revoke_families_of_user(user_id, reason)
        await self._revocations.revoke_user(user_id)
        log.info("user_sessions_ended", user_id=user_id, reason=reason, families=len(families))
        return len(families)

    async def me(self, user_id: str) -> UserRow:
        # Id, email and created_at never change once created, so a replica may keep the
        # profile: GetMe is the hottest authenticated read. Roles do change: callers
        # take them from the (revocable) access token instead.
        user = self._profiles.get(user_id)
        if user is None:
            user = await self._store.user_by_id(user_id) if is_uuid(user_id) else None
            if user is None:
                raise NotFound("the account no longer exists", reason="USER_NOT_FOUND")
            self._profiles[user_id] = user
            if len(self._profiles) > PROFILE_CACHE_SIZE:
                self._profiles.popitem(last=False)
        return user

    async def _issue(
        self,
        tx: AuthStore,
        user: UserRow,
        *,
        family_id: str | None = None,
        absolute_expires_at: datetime | None = None,
    ) -> IssuedTokens:
        now = datetime.now(UTC)
        if family_id is None:
            absolute_expires_at = now + self._refresh_absolute_ttl
            family_id = await tx.create_family(user.id, absolute_expires_at)
        # An Ed25519 signature takes microseconds: cheaper inline than a thread hop.
        access_token, access_expires = self._issuer.issue(
            user_id=user.id, email=user.email, roles=list(user.roles), family_id=family_id, now=now
        )
        refresh_token = new_refresh_token()
        refresh_expires = now + self._refresh_ttl
        if absolute_expires_at is not None:
            refresh_expires = min(refresh_expires, absolute_expires_at)
        refresh_expires = refresh_expires.replace(microsecond=0)
        await tx.insert_refresh_token(hash_refresh_token(refresh_token), family_id, user.id, refresh_expires)
        return IssuedTokens(access_token, access_expires, refresh_token, refresh_expires, self._issuer.ttl_s)
