"""Settings of the sessions service (on top of the shared ones)."""

from __future__ import annotations

from pydantic import Field

from runtime.settings import TokenClientSettings


class SessionsSettings(TokenClientSettings):
    grpc_port: int = Field(default=50052, ge=0, le=65535)
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    agent_addr: str = "127.0.0.1:50053"
    # Deleting a session also deletes its conversation in the agent service. Only turn
    # this off for a deployment that runs no agent service.
    delete_conversation_state: bool = True
    agent_call_timeout_s: float = Field(default=5.0, gt=0)
    # Sessions one user may hold at once (all replicas: counted in Postgres under the
    # owner's lock); CreateSession past it is RESOURCE_EXHAUSTED / SESSION_QUOTA_EXCEEDED.
    max_sessions_per_user: int = Field(default=1000, ge=1)
    # Default lifetime of a new session that names no expire_time or ttl (AIP-214);
    # 0 = sessions never expire, so nothing existing or new disappears unless asked.
    session_ttl_s: float = Field(default=0.0, ge=0)
    # How often each replica looks for expired sessions and pending conversation clears.
    session_sweep_interval_s: float = Field(default=30.0, gt=0)
    session_sweep_batch: int = Field(default=100, ge=1, le=10_000)
