"""Where the OpenAI-compatible model lives; shared by the agent, memory and evals services.

With neither LLM_BASE_URL nor an API key, everything points at the offline model server
that `make run` and the tests start on loopback; with OPENAI_API_KEY alone, at OpenAI.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

OFFLINE_LLM_BASE_URL = "http://127.0.0.1:8100/v1"
OPENAI_BASE_URL = "https://api.openai.com/v1"


class LLMSettings(BaseSettings):
    llm_base_url: str = ""
    llm_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("LLM_API_KEY", "OPENAI_API_KEY"))
    # Tried in order: the first is the primary, the rest are fallbacks.
    llm_models: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["offline-small", "offline-large"])
    llm_timeout_s: float = Field(default=30.0, gt=0)

    # Retries, backoff and circuit breakers of runtime/llm (agent, memory, evals alike).
    llm_max_attempts: int = Field(default=3, ge=1, le=10)
    llm_backoff_base_s: float = Field(default=0.25, ge=0)
    llm_backoff_max_s: float = Field(default=4.0, ge=0)
    # A retry-after longer than this is not waited for: the next model is tried instead.
    llm_retry_after_max_s: float = Field(default=10.0, ge=0)
    llm_circuit_failure_threshold: int = Field(default=5, ge=1)
    llm_circuit_cooldown_s: float = Field(default=30.0, gt=0)

    @field_validator("llm_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("llm_models")
    @classmethod
    def _at_least_one(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one model is required")
        return value

    @property
    def effective_llm_base_url(self) -> str:
        if self.llm_base_url:
            return self.llm_base_url.rstrip("/")
        return OPENAI_BASE_URL if self.llm_api_key else OFFLINE_LLM_BASE_URL

    @property
    def effective_llm_api_key(self) -> str:
        # OpenAI-compatible servers without auth (vLLM, Ollama, ours) still need a value.
        return self.llm_api_key.get_secret_value() if self.llm_api_key else "offline"
