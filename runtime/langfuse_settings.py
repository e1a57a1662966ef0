"""Where traces and scores go in Langfuse; read by the agent (turn traces) and the evals
service (trace import, score export), so only their settings classes include it."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings


class LangfuseSettings(BaseSettings):
    langfuse_public_key: SecretStr | None = None
    langfuse_secret_key: SecretStr | None = None
    langfuse_host: str = "https://cloud.langfuse.com"

    @property
    def langfuse_enabled(self) -> bool:
        return bool(self.langfuse_public_key and self.langfuse_secret_key)
