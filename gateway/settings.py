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
from runtime.registry import process
from runtime.settings import SettingsError, env_files

DEFAULT_DESCRIPTOR_SET = Path(agentmesh.__file__).parent / "descriptors.binpb"


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

    # The upstreams a local mesh runs (the ports of runtime/registry.py).
    auth_addr: str = process("auth").local_addr
    sessions_addr: str = process("sessions").local_addr
    agent_addr: str = process("agent").local_addr
    memory_addr: str = process("memory").local_addr
    evals_addr: str = process("evals").local_addr

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
    # How often upstream health (gateway_upstream_up, /upstreamz) is checked in the background.
    gateway_upstream_check_interval_s: float = Field(default=5.0, gt=0)
    # /metrics and /upstreamz: their own port, off the public one; loopback unless opened up
    # (0.0.0.0 in a pod, so Prometheus can scrape it). Port 0 picks a free port.
    gateway_metrics_host: str = "127.0.0.1"
    gateway_metrics_port: int = Field(default=9100, ge=0, le=65535)

    allowed_origins: Annotated[list[str], NoDecode] = [
        "http://localhost:8080",
        "http://127.0.0.1:8080",
    ]
    trusted_proxies: Annotated[list[str], NoDecode] = []
    # Declares that an ingress or load balancer sits in front: with APP_ENV=production the
    # gateway then refuses to start without TRUSTED_PROXIES, or every client would share the
    # proxy's address (one rate-limit bucket, one address in the logs).
    gateway_behind_proxy: bool = False
    # uvicorn's graceful shutdown after SIGTERM: open requests and SSE streams get this long.
    # The manifests set it to GATEWAY_STREAM_TIMEOUT and size terminationGracePeriodSeconds
    # from it (scripts/k8s_check.py checks that they fit).
    gateway_shutdown_grace_s: float = Field(default=10.0, gt=0, le=900)

    # Token verification for rate-limit keys; the same variables (and defaults) the services read.
    jwt_issuer: str = "agentmesh-auth"
    jwt_audience: str = "agentmesh"
    jwt_algorithm: Literal["EdDSA", "RS256"] = "EdDSA"
    jwks_cache_ttl_s: float = Field(default=300.0, gt=0)
    jwks_refetch_min_interval_s: float = Field(default=2.0, ge=0)

    rate_limit_enabled: bool = True
    rate_limit_storage_url: str = "memory://"
    rate_limit_key_prefix: str = "agentmesh-gateway"
    # Per user when the token verifies, else per client address. Reads (GET) are polled by pages
    # and scripts, so they get a per-minute budget instead of sharing the writes' hourly one.
    rate_limit_default: str = "60 per minute,1000 per hour"
    rate_limit_read: str = "300 per minute"
    rate_limit_chat: str = "100 per minute"
    rate_limit_chat_stream: str = "100 per minute"
    rate_limit_messages: str = "200 per minute"
    rate_limit_login: str = "100 per minute"
    rate_limit_register: str = "20 per minute"

    # Admission control per route class (gateway/admission.py), per replica and in memory: at
    # most this many requests of a class in flight to the upstreams (0: unlimited); a request
    # finding them all busy waits at most ADMISSION_MAX_WAIT_MS, then gets 503 with Retry-After
    # (whole seconds, at most ADMISSION_RETRY_AFTER_MAX_S). Sized for two cores: login and
    # register each cost a bcrypt hash, a chat is an LLM turn; a stream holds its slot to the end.
    admission_max_wait_ms: int = Field(default=250, ge=0, le=60_000)
    admission_retry_after_max_s: int = Field(default=30, ge=1, le=3600)
    admission_limit_default: int = Field(default=64, ge=0)
    admission_limit_read: int = Field(default=256, ge=0)
    admission_limit_chat: int = Field(default=32, ge=0)
    admission_limit_chat_stream: int = Field(default=64, ge=0)
    admission_limit_messages: int = Field(default=64, ge=0)
    admission_limit_login: int = Field(default=8, ge=0)
    admission_limit_register: int = Field(default=8, ge=0)
    # Adaptive limits (gateway/adaptive_limit.py): each class's limit above is its ceiling and
    # drops while the latency of its admitted requests is over ADMISSION_LATENCY_TOLERANCE times
    # its best of the last ADMISSION_BASELINE_S plus ADMISSION_LATENCY_SLACK_MS, down to at least
    # ADMISSION_MIN_LIMIT; it grows back once latency is in range.
    admission_adaptive: bool = True
    admission_min_limit: int = Field(default=2, ge=1)
    admission_latency_tolerance: float = Field(default=1.5, ge=1.0)
    admission_latency_slack_ms: int = Field(default=100, ge=0)
    admission_baseline_s: float = Field(default=30.0, gt=0)

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
        if self.app_env == "production" and self.gateway_behind_proxy and not self.trusted_proxies:
            raise ValueError(
                "TRUSTED_PROXIES must name the proxy's networks with GATEWAY_BEHIND_PROXY=true and APP_ENV=production"
            )
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
            "read": self.rate_limit_read,
            "chat": self.rate_limit_chat,
            "chat_stream": self.rate_limit_chat_stream,
            "messages": self.rate_limit_messages,
            "login": self.rate_limit_login,
            "register": self.rate_limit_register,
        }

    def admission_limits(self) -> dict[str, int]:
        return {
            "default": self.admission_limit_default,
            "read": self.admission_limit_read,
            "chat": self.admission_limit_chat,
            "chat_stream": self.admission_limit_chat_stream,
            "messages": self.admission_limit_messages,
            "login": self.admission_limit_login,
            "register": self.admission_limit_register,
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
