"""Settings of the auth service (on top of the shared ones)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from services.common.settings import CommonSettings

# Refused in production: anyone with the source could decrypt the stored signing keys.
DEV_SIGNING_KEY_SECRET = "agentmesh-development-signing-key-secret"  # noqa: S105


class AuthSettings(CommonSettings):
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=9101, ge=0, le=65535)

    access_token_ttl_s: int = Field(default=900, ge=60, le=86_400)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=3600)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    admin_emails: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Encrypts the private signing keys stored in the database (AES-GCM, HKDF-derived).
    signing_key_secret: SecretStr = SecretStr(DEV_SIGNING_KEY_SECRET)
    signing_key_rotation_days: int = Field(default=30, ge=1)
    signing_key_reload_s: float = Field(default=60.0, gt=0)

    @field_validator("admin_emails", mode="before")
    @classmethod
    def _split_emails(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.signing_key_secret.get_secret_value() == DEV_SIGNING_KEY_SECRET:
            problems.append("SIGNING_KEY_SECRET must be set (the development default is public)")
        if len(self.signing_key_secret.get_secret_value()) < 32:
            problems.append("SIGNING_KEY_SECRET must be at least 32 characters")
        if self.bcrypt_rounds < 12:
            problems.append("BCRYPT_ROUNDS must be at least 12")
        return problems
