"""Settings of the offline LLM server, from `OFFLINE_LLM_*` environment variables."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from offline_llm.faults import parse_fault_setting


class OfflineLLMSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OFFLINE_LLM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=0, le=65535)
    ttft_ms: float = Field(default=0.0, ge=0, description="delay before the first token")
    tokens_per_s: float = Field(default=0.0, ge=0, description="streaming pace; 0 streams at once")
    embedding_dim: int = Field(default=384, ge=1, le=8192)
    faults: str = Field(default="", description="startup faults, format in offline_llm.faults")
    models: str = Field(
        default="offline-small,offline-large,offline-embedding",
        description="comma-separated model ids listed by GET /v1/models; any id is accepted",
    )

    @field_validator("faults")
    @classmethod
    def _faults_parse(cls, value: str) -> str:
        parse_fault_setting(value)
        return value

    def model_ids(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]
