"""Settings of the auth service (on top of the shared ones)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Self

from pydantic import Field, SecretStr, model_validator

from runtime.service_identity import dev_service_credential, is_dev_service_credential
from runtime.settings import CommonSettings

# Refused in staging and production: anyone with the source could decrypt the stored signing keys.
DEV_SIGNING_KEY_SECRET = "agentmesh-development-signing-key-secret"  # noqa: S105
HASHED_PREFIX = "sha256:"


class AuthSettings(CommonSettings):
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=9101, ge=0, le=65535)

    access_token_ttl_s: int = Field(default=900, ge=60, le=86_400)
    # Sliding lifetime: a refresh token not used within this long expires.
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=3600)
    # Absolute lifetime of a refresh token family (a sign-in), however often it is refreshed.
    refresh_absolute_ttl_s: int = Field(default=30 * 86_400, ge=1)
    # A refresh token replayed this soon after its rotation, before its successor was
    # used, returns the same new pair instead of counting as theft (double submits,
    # lost responses). Later replays revoke the family.
    refresh_reuse_grace_s: float = Field(default=10.0, ge=0, le=300)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    # Per-account login throttling, shared by every replica (Postgres).
    login_max_failures: int = Field(default=10, ge=1)
    login_failure_window_s: int = Field(default=900, ge=1)
    # Encrypts the private signing keys stored in the database (AES-GCM, HKDF-derived).
    signing_key_secret: SecretStr = SecretStr(DEV_SIGNING_KEY_SECRET)
    signing_key_rotation_days: int = Field(default=30, ge=1)
    signing_key_reload_s: float = Field(default=60.0, gt=0)
    # Each service's credential for IssueServiceToken: `name=secret` or
    # `name=sha256:<hex of the secret>` pairs, comma-separated. Empty in development
    # and test: every service's public development credential is accepted.
    service_credentials: SecretStr = SecretStr("")
    service_token_ttl_s: int = Field(default=300, ge=30, le=3600)
    # How often a replica reads revocations made by other replicas; with the stream to
    # the services this bounds how long a revoked token keeps working (2 s).
    revocation_poll_s: float = Field(default=0.5, gt=0, le=1.5)

    # The services account deletion erases and ExportAccount reads.
    sessions_addr: str = "127.0.0.1:50052"
    agent_addr: str = "127.0.0.1:50053"
    memory_addr: str = "127.0.0.1:50054"
    evals_addr: str = "127.0.0.1:50055"
    # Account deletion: the first erasure waits this long after the account is ended, so
    # every service refuses the user's tokens first (revocations reach them within ~2 s).
    account_deletion_start_delay_s: float = Field(default=3.0, ge=0, le=60)
    # DeleteAccount answers once the erasure is done or after this long (then PENDING;
    # the job goes on and is retried, with jittered backoff up to the maximum, until done).
    account_deletion_wait_s: float = Field(default=10.0, ge=0, le=60)
    account_deletion_poll_s: float = Field(default=1.0, gt=0, le=60)
    account_deletion_max_backoff_s: float = Field(default=60.0, ge=1, le=3600)
    # Each EraseUserData call; the agent's may wait for a running turn to roll back.
    erase_call_timeout_s: float = Field(default=30.0, gt=0, le=300)
    # Each page ExportAccount reads from a service.
    export_call_timeout_s: float = Field(default=10.0, gt=0, le=120)

    def service_credential_hashes(self) -> dict[str, str]:
        """Service name -> hex SHA-256 of its credential."""
        table = {}
        for pair in self.service_credentials.get_secret_value().split(","):
            name, sep, secret = pair.strip().partition("=")
            if not sep or not name.strip() or not secret.strip():
                continue
            secret = secret.strip()
            if secret.startswith(HASHED_PREFIX):
                table[name.strip()] = secret[len(HASHED_PREFIX) :].lower()
            else:
                table[name.strip()] = hashlib.sha256(secret.encode()).hexdigest()
        return table

    def accepts_dev_service_credentials(self) -> bool:
        return self.app_env in ("development", "test") and not self.service_credential_hashes()

    def service_credential_matches(self, name: str, credential: str) -> bool:
        digest = hashlib.sha256(credential.encode()).hexdigest()
        if self.accepts_dev_service_credentials():
            return hmac.compare_digest(credential.encode(), dev_service_credential(name).encode())
        expected = self.service_credential_hashes().get(name)
        return expected is not None and hmac.compare_digest(digest, expected)

    def secret_problems(self) -> list[str]:
        """Development secrets that must not reach staging or production."""
        problems = []
        secret = self.signing_key_secret.get_secret_value()
        if secret == DEV_SIGNING_KEY_SECRET:
            problems.append("SIGNING_KEY_SECRET must be set (the development default is public)")
        if len(secret) < 32:
            problems.append("SIGNING_KEY_SECRET must be at least 32 characters")
        if not self.service_credential_hashes():
            problems.append("SERVICE_CREDENTIALS must list each service's credential (name=secret,...)")
        dev = [
            pair.partition("=")[0].strip()
            for pair in self.service_credentials.get_secret_value().split(",")
            if is_dev_service_credential(pair.partition("=")[2].strip())
        ]
        if dev:
            problems.append(f"SERVICE_CREDENTIALS uses development credentials for: {', '.join(dev)}")
        return problems

    def production_problems(self) -> list[str]:
        problems = super().production_problems() + self.secret_problems()
        if self.bcrypt_rounds < 12:
            problems.append("BCRYPT_ROUNDS must be at least 12")
        return problems

    @model_validator(mode="after")
    def _refuse_development_secrets_in_staging(self) -> Self:
        # Staging holds real-looking data and is reachable: a public signing secret there
        # lets anyone mint tokens. (Production refuses these through production_problems.)
        if self.app_env == "staging":
            problems = self.secret_problems()
            if problems:
                raise ValueError("unsafe settings for APP_ENV=staging: " + "; ".join(problems))
        return self
