"""Settings every service shares, read from the environment and `.env.<APP_ENV>` files.

Precedence (highest first): real environment variables, `.env.<APP_ENV>.local`,
`.env.<APP_ENV>`, `.env`. A missing or malformed setting is a SettingsError naming it (values
are never echoed for secrets); the process's entry point turns it into a message and a non-zero
exit (runtime.entrypoint).

CommonSettings is what every service's process reads; TokenClientSettings adds what the auth
service's clients read (every service but auth). The parts only some services use are mixins
their settings classes add: runtime.llm_settings.LLMSettings (agent, memory, evals),
runtime.langfuse_settings.LangfuseSettings (agent, evals).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.registry import process

ROOT = Path(__file__).resolve().parents[1]

AppEnv = Literal["development", "test", "staging", "production"]
# OTEL_TRACES_SAMPLER values the OpenTelemetry SDK knows.
TracesSampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]


def env_files(app_env: str) -> tuple[Path, ...]:
    names = (".env", f".env.{app_env}", f".env.{app_env}.local")
    return tuple(ROOT / name for name in names)


class CommonSettings(BaseSettings):
    """What the shared runtime reads. Each service subclasses it with its own fields."""

    model_config = SettingsConfigDict(extra="ignore", env_file_encoding="utf-8")

    app_env: AppEnv = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json", ""] = ""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # Kubernetes sends SIGTERM after the preStop hook; the drain must end before
    # terminationGracePeriodSeconds minus preStop, or in-flight streams are killed.
    shutdown_grace_s: float = Field(default=20.0, gt=0, le=300)
    # Largest gRPC message a service sends (history pages, memory lists, trace exports).
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    # The largest request a service receives is what the gateway lets in, transcoded: the
    # gateway refuses HTTP bodies above GATEWAY_MAX_BODY_BYTES (the same variable, read here
    # too), and a JSON body's protobuf encoding is no larger than the JSON plus a few bytes
    # of tag and length per field, which GRPC_MESSAGE_OVERHEAD_BYTES covers. Anything larger
    # is refused with RESOURCE_EXHAUSTED before any handler runs.
    gateway_max_body_bytes: int = Field(default=1_048_576, gt=0)
    grpc_message_overhead_bytes: int = Field(default=64 * 1024, ge=0)
    # HTTP/2 streams one client connection may have open at once. The gateway multiplexes
    # every user over one channel per upstream; calls past the limit wait in the client.
    grpc_max_concurrent_streams: int = Field(default=1000, ge=1)
    # Keepalive enforcement: a client pinging more often than this without data gets
    # strikes, and after GRPC_MAX_PING_STRIKES a GOAWAY (our clients ping every 30 s).
    grpc_keepalive_min_ping_interval_s: float = Field(default=10.0, gt=0)
    grpc_max_ping_strikes: int = Field(default=2, ge=0)
    # The server pings idle connections this often, and drops them if no ack comes back.
    grpc_keepalive_time_s: float = Field(default=60.0, gt=0)
    grpc_keepalive_timeout_s: float = Field(default=20.0, gt=0)
    # Connections are closed (GOAWAY) after this age, so long-lived client channels
    # reconnect and spread over replicas as they scale; streams in flight get the grace,
    # which must outlast the longest stream (the gateway's 300 s stream timeout).
    grpc_max_connection_age_s: float = Field(default=300.0, gt=0)
    grpc_max_connection_age_grace_s: float = Field(default=900.0, gt=0)
    # Server reflection (grpcurl, Postman): on by default outside production, off in
    # production unless GRPC_REFLECTION=true.
    grpc_reflection: bool | None = None

    database_url: SecretStr | None = None
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout_s: float = Field(default=10.0, gt=0)
    db_migrate_on_start: bool = True
    # A database that is still starting (or a DNS name not yet resolvable) is retried with
    # backoff for this long before start-up fails; keep it inside the startup probe window.
    db_connect_timeout_s: float = Field(default=30.0, gt=0)
    # Bounded waits while serving (issue 16): a database that stops answering makes calls fail
    # UNAVAILABLE (DATABASE_UNAVAILABLE) instead of hanging. One statement: the server cancels it
    # after DB_STATEMENT_TIMEOUT_S (statement_timeout), the client gives up one second later (a
    # frozen server cancels nothing). One new connection: DB_CONNECT_ATTEMPT_TIMEOUT_S. The
    # longest a call can wait is runtime.database.database_wait_bound_s().
    db_statement_timeout_s: float = Field(default=5.0, gt=0)
    db_connect_attempt_timeout_s: float = Field(default=5.0, ge=1)
    # The health probe pings the database this often; the service's gRPC health is NOT_SERVING
    # (readiness) while a ping fails or takes longer than DB_HEALTH_TIMEOUT_S, SERVING again
    # when one succeeds. The overall status "" (liveness) stays SERVING: a restart cures nothing.
    db_health_interval_s: float = Field(default=2.0, gt=0)
    db_health_timeout_s: float = Field(default=2.0, gt=0)
    data_dir: Path = ROOT / ".data"

    jwt_issuer: str = "agentmesh-auth"
    jwt_audience: str = "agentmesh"
    jwt_algorithm: Literal["EdDSA", "RS256"] = "EdDSA"
    # An unknown kid triggers a refetch, at most this often, so forged kids cannot turn every
    # request into a call to the auth service (or, in the auth service, a read of its key ring).
    jwks_refetch_min_interval_s: float = Field(default=2.0, ge=0)

    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = ""
    # The OpenTelemetry SDK's sampler variables (read by runtime/tracing.py; listed
    # here so a bad value stops the start instead of falling back to sampling everything).
    otel_traces_sampler: TracesSampler = "parentbased_always_on"
    otel_traces_sampler_arg: float | None = Field(default=None, ge=0, le=1)
    # How outgoing channels balance (read by runtime/clients.py, listed here so a bad
    # value stops the start): round_robin spreads calls over every pod a headless Service names.
    grpc_lb_policy: Literal["round_robin", "pick_first"] = "round_robin"

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def max_receive_message_bytes(self) -> int:
        return self.gateway_max_body_bytes + self.grpc_message_overhead_bytes

    @property
    def reflection_enabled(self) -> bool:
        return self.grpc_reflection if self.grpc_reflection is not None else not self.is_production

    @property
    def effective_log_format(self) -> str:
        if self.log_format:
            return self.log_format
        return "json" if self.app_env in ("production", "staging") else "console"

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        if self.is_production:
            problems = self.production_problems()
            if problems:
                raise ValueError("unsafe settings for APP_ENV=production: " + "; ".join(problems))
        return self

    def production_problems(self) -> list[str]:
        """Development conveniences that must not reach production; subclasses add theirs."""
        problems = []
        if self.database_url is None:
            problems.append("DATABASE_URL is required (the embedded database is for development)")
        return problems


class TokenClientSettings(CommonSettings):
    """A service that is the auth service's client: it verifies access tokens with the auth
    service's JWKS, follows its revocation feed and obtains service tokens from it (every gRPC
    service but auth, which verifies and issues its own in-process; runtime/server.py)."""

    auth_addr: str = process("auth").local_addr
    jwks_cache_ttl_s: float = Field(default=300.0, gt=0)
    # This service's secret for IssueServiceToken (empty: the public development
    # credential, refused in staging and production; see runtime/service_identity.py).
    service_credential: SecretStr = SecretStr("")


S = TypeVar("S", bound=CommonSettings)


class ConfigurationError(Exception):
    """The process cannot start as configured: a bad setting, a package the configuration needs
    that is not installed, a database that disagrees with a setting. Library code raises it; the
    process's entry point (runtime.entrypoint) prints it and exits non-zero, without a traceback."""


class SettingsError(ConfigurationError):
    """A readable list of bad settings (never their values)."""


def load_settings(cls: type[S], **overrides: Any) -> S:
    app_env = os.environ.get("APP_ENV", "development")
    try:
        return cls(_env_file=env_files(app_env), **overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper() or "settings"
            lines.append(f"  {name}: {error['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
