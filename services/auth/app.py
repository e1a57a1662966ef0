"""Wiring of the auth service: database, key ring, accounts, servicer."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import jwt

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from runtime.database import Database, open_database
from runtime.logging import get_logger
from runtime.revocations import RevocationSet
from runtime.server import Mount, ServiceApp
from runtime.tokens import AccessTokenVerifier
from services.auth.accounts import Accounts, SuccessorSeal
from services.auth.deletions import AccountDeletions, DeletionSettings, UserKeys
from services.auth.erasure_calls import SelfServiceToken, ServiceErasers
from services.auth.export import AccountExport
from services.auth.keys import KeyCipher, KeyRing
from services.auth.passwords import PasswordHasher
from services.auth.revocations import RevocationLog
from services.auth.roles import Roles
from services.auth.server import AuthServicer
from services.auth.service_tokens import ServiceTokens
from services.auth.settings import AuthSettings
from services.auth.store import AuthStore
from services.auth.throttle import LoginThrottle
from services.auth.tokens import AccessTokenIssuer

log = get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
HOUSEKEEPING_INTERVAL_S = 300.0


class KeyRingSource:
    """The auth service verifies its own tokens from the key ring, reloading it when a
    token names a kid another replica created since the last reload."""

    def __init__(self, keys: KeyRing, refetch_min_interval_s: float) -> None:
        self._keys = keys
        self._refetch_min_interval_s = refetch_min_interval_s

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        key = self._keys.verification_key(kid)
        if key is None and self._keys.loaded_age_s() >= self._refetch_min_interval_s:
            await self._keys.reload()
            key = self._keys.verification_key(kid)
        return key


class AuthApp(ServiceApp):
    name = "auth"
    settings: AuthSettings

    def __init__(self, settings: AuthSettings) -> None:
        super().__init__(settings)
        self.database: Database | None = None
        self.keys: KeyRing | None = None
        self._reloader: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        # This replica's revoked tokens: its own verifier reads them, its watchers get them.
        self.revocations = RevocationSet()
        self.revocation_log: RevocationLog | None = None
        self.deletions: AccountDeletions | None = None
        self._erasers: ServiceErasers | None = None
        self._export: AccountExport | None = None

    async def open_store(self) -> AuthStore:
        if self.database is None:
            self.database = await open_database(self.settings, schema="auth", migrations=MIGRATIONS)
        return AuthStore(self.database.engine)

    def open_revocation_log(self, store: AuthStore) -> RevocationLog:
        s = self.settings
        self.revocation_log = RevocationLog(
            store, self.revocations, access_ttl_s=s.access_token_ttl_s, poll_s=s.revocation_poll_s
        )
        return self.revocation_log

    async def open_key_ring(self) -> KeyRing:
        s = self.settings
        await self.open_store()
        assert self.database is not None
        self.keys = KeyRing(
            AuthStore(self.database.engine),
            KeyCipher(s.signing_key_secret.get_secret_value()),
            algorithm=s.jwt_algorithm,
            token_ttl_s=s.access_token_ttl_s,
            rotation_days=s.signing_key_rotation_days,
        )
        return self.keys

    async def start(self) -> list[Mount]:
        s = self.settings
        keys = await self.open_key_ring()
        await keys.ensure_active_key()
        assert self.database is not None
        store = AuthStore(self.database.engine)
        issuer = AccessTokenIssuer(keys, issuer=s.jwt_issuer, audience=s.jwt_audience, ttl_s=s.access_token_ttl_s)
        revocations = self.open_revocation_log(store)
        await revocations.start()
        secret = s.signing_key_secret.get_secret_value()
        throttle = LoginThrottle(store, max_failures=s.login_max_failures, window_s=s.login_failure_window_s)
        hasher = PasswordHasher(s.bcrypt_rounds)
        accounts = Accounts(
            store,
            hasher,
            issuer,
            revocations,
            throttle,
            SuccessorSeal(KeyCipher(secret, purpose=b"agentmesh-refresh-successors")),
            refresh_ttl_s=s.refresh_token_ttl_s,
            refresh_absolute_ttl_s=s.refresh_absolute_ttl_s,
            refresh_reuse_grace_s=s.refresh_reuse_grace_s,
        )
        addrs = {"sessions": s.sessions_addr, "agent": s.agent_addr, "memory": s.memory_addr, "evals": s.evals_addr}
        self._erasers = ServiceErasers(addrs, SelfServiceToken(issuer), s.erase_call_timeout_s)
        self.deletions = AccountDeletions(
            store,
            hasher,
            throttle,
            revocations,
            self._erasers,
            UserKeys(secret),
            DeletionSettings(
                start_delay_s=s.account_deletion_start_delay_s,
                wait_s=s.account_deletion_wait_s,
                poll_s=s.account_deletion_poll_s,
                max_backoff_s=s.account_deletion_max_backoff_s,
                lease_s=max(60.0, 4 * s.erase_call_timeout_s),
            ),
        )
        self.deletions.start()
        self._export = AccountExport(addrs, s.export_call_timeout_s)
        servicer = AuthServicer(
            accounts,
            keys,
            Roles(store, revocations),
            ServiceTokens(s, issuer),
            revocations,
            self.deletions,
            self._export,
        )
        self._reloader = asyncio.create_task(self._reload_keys_periodically())
        self._housekeeper = asyncio.create_task(self._housekeeping(revocations, throttle))
        return [
            Mount(
                descriptor=auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
                add_to_server=auth_pb2_grpc.add_AuthServiceServicer_to_server,
                servicer=servicer,
            )
        ]

    async def _reload_keys_periodically(self) -> None:
        # Picks up rotations made by another replica or by `rotate-keys`, and rotates
        # when the active key has reached its age.
        assert self.keys is not None
        while True:
            await asyncio.sleep(self.settings.signing_key_reload_s)
            try:
                await self.keys.ensure_active_key()
            except Exception:
                log.exception("signing_key_reload_failed")

    async def _housekeeping(self, revocations: RevocationLog, throttle: LoginThrottle) -> None:
        # Rows no check will ever read again: expired revocations, failures outside the window.
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            try:
                await revocations.forget_expired()
                await throttle.forget_old()
            except Exception:
                log.exception("auth_housekeeping_failed")

    def token_verifier(self) -> AccessTokenVerifier:
        assert self.keys is not None
        s = self.settings
        return AccessTokenVerifier(
            KeyRingSource(self.keys, s.jwks_refetch_min_interval_s),
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
            algorithm=s.jwt_algorithm,
            revocations=self.revocations,
        )

    async def before_drain(self) -> None:
        if self.revocation_log is not None:
            self.revocation_log.end_watches()

    async def stop(self) -> None:
        # A job cut short is taken over by another replica once its lease ends.
        if self.deletions is not None:
            await self.deletions.close()
        for client in (self._erasers, self._export):
            if client is not None:
                await client.close()
        if self.revocation_log is not None:
            await self.revocation_log.stop()
        for task in (self._reloader, self._housekeeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.database is not None:
            await self.database.close()
