"""Gateway settings, read from the environment (and `.env`) with pydantic-settings."""

from __future__ import annotations

import ipaddress
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import agentmesh
from services.common.settings import SettingsError, env_files

DEFAULT_DESCRIPTOR_SET = Path(agentmesh.__file__).parent / "descriptors.binpb"

# The seed's route classes; an RPC not listed falls into `default`.
DEFAULT_RATE_LIMIT_CLASSES = {
    "agentmesh.auth.v1.AuthService.Login": "login",
    "agentmesh.auth.v1.AuthService.Refresh": "login",
    "agentmesh.auth.v1.AuthService.Register": "register",
    "agentmesh.agent.v1.AgentService.Chat": "chat",
    "agentmesh.agent.v1.AgentService.StreamChat": "chat_stream",
    "agentmesh.agent.v1.AgentService.GetHistory": "messages",
    "agentmesh.agent.v1.AgentService.ClearHistory": "messages",
}


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_file_encoding="utf-8", frozen=True)

    app_env: Literal["development", "test", "staging", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json", ""] = ""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    gateway_descriptor_set: Path = DEFAULT_DESCRIPTOR_SET

    auth_addr: str = "127.0.0.1:50051"
    sessions_addr: str = "127.0.0.1:50052"
    agent_addr: str = "127.0.0.1:50053"
    memory_addr: str = "127.0.0.1:50054"
    evals_addr: str = "127.0.0.1:50055"

    # Deadlines in seconds. Streams get longer because an agent turn with tools can take minutes.
    gateway_unary_timeout: float = Field(default=30.0, gt=0)
    gateway_stream_timeout: float = Field(default=300.0, gt=0)
    gateway_max_timeout: float = Field(default=600.0, gt=0)
    gateway_sse_heartbeat: float = Field(default=15.0, gt=0)
    # Longer than clients and load balancers keep idle connections (60 s is common), so the
    # gateway is never the side that closes one as a request arrives on it (ReadError).
    gateway_keepalive_timeout: float = Field(default=75.0, gt=0)
    gateway_max_body_bytes: int = Field(default=1_048_576, gt=0)
    gateway_emit_unpopulated: bool = True
    gateway_readiness_timeout: float = Field(default=2.0, gt=0)

    allowed_origins: Annotated[list[str], NoDecode] = [
        "http://localhost:8080",
        "http://127.0.0.1:8080",
    ]
    trusted_proxies: Annotated[list[str], NoDecode] = []

    # Token verification for rate-limit keys; the same variables (and defaults) the services read.
    jwt_issuer: str = "agentmesh-auth"
    jwt_audience: str = "agentmesh"
    jwt_algorithm: Literal["EdDSA", "RS256"] = "EdDSA"
    jwks_cache_ttl_s: float = Field(default=300.0, gt=0)
    jwks_refetch_min_interval_s: float = Field(default=2.0, ge=0)

    rate_limit_enabled: bool = True
    rate_limit_storage_url: str = "memory://"
    rate_limit_key_prefix: str = "agentmesh-gateway"
    rate_limit_default: str = "1000 per day,200 per hour"
    rate_limit_chat: str = "100 per minute"
    rate_limit_chat_stream: str = "100 per minute"
    rate_limit_messages: str = "200 per minute"
    rate_limit_login: str = "100 per minute"
    rate_limit_register: str = "20 per minute"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("allowed_origins", "trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        # Each replica would count on its own, multiplying every limit by the replica count.
        if (
            self.app_env == "production"
            and self.rate_limit_enabled
            and self.rate_limit_storage_url.startswith("memory")
        ):
            raise ValueError("RATE_LIMIT_STORAGE_URL must be shared storage (redis://...) with APP_ENV=production")
        return self

    @property
    def effective_log_format(self) -> str:
        if self.log_format:
            return self.log_format
        return "json" if self.app_env in ("production", "staging") else "console"

    @cached_property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.trusted_proxies)

    def rate_limits(self) -> dict[str, str]:
        return {
            "default": self.rate_limit_default,
            "chat": self.rate_limit_chat,
            "chat_stream": self.rate_limit_chat_stream,
            "messages": self.rate_limit_messages,
            "login": self.rate_limit_login,
            "register": self.rate_limit_register,
        }

    def upstream_address(self, service_full_name: str) -> str | None:
        """`agentmesh.memory.v1.MemoryService` -> MEMORY_ADDR.

        A service added later needs only its `<NAME>_ADDR` variable, no settings change.
        """
        parts = service_full_name.split(".")
        if len(parts) < 3:
            return None
        name = parts[-3].lower()
        known = getattr(self, f"{name}_addr", None)
        if isinstance(known, str):
            return known
        return os.environ.get(f"{name.upper()}_ADDR")


def load_gateway_settings() -> GatewaySettings:
    """Settings from the environment and the `.env.<APP_ENV>` files the services use too."""
    app_env = os.environ.get("APP_ENV", "development")
    try:
        return GatewaySettings(_env_file=env_files(app_env))  # type: ignore[call-arg]
    except ValidationError as exc:
        lines = [f"  {'_'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}" for e in exc.errors()]
        raise SettingsError("invalid gateway settings:\n" + "\n".join(lines)) from None
