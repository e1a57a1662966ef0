"""Settings of the agent service (on top of the shared, the LLM and the Langfuse ones)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from runtime.langfuse_settings import LangfuseSettings
from runtime.llm_settings import LLMSettings
from runtime.settings import TokenClientSettings


class AgentSettings(TokenClientSettings, LLMSettings, LangfuseSettings):
    grpc_port: int = Field(default=50053, ge=0, le=65535)
    metrics_port: int = Field(default=9103, ge=0, le=65535)

    sessions_addr: str = "127.0.0.1:50052"
    memory_addr: str = "127.0.0.1:50054"
    evals_addr: str = "127.0.0.1:50055"
    sessions_timeout_s: float = Field(default=2.0, gt=0)

    agent_name: str = "agentmesh Agent"
    max_context_tokens: int = Field(default=8000, ge=256)
    # Past MAX_CONTEXT_TOKENS: `summarize` folds the older turns into a running summary the
    # model keeps seeing; `trim` drops them from what the model sees (both keep the history).
    context_strategy: Literal["summarize", "trim"] = "summarize"
    # Checkpoints kept per conversation: 1 prunes each conversation to its latest after every
    # turn (storage grows with the conversation, not with its square); 0 keeps them all (for
    # time travel). The library's pruning keeps the latest only, so more is not offered.
    checkpoints_keep: int = Field(default=1, ge=0, le=1)
    max_message_chars: int = Field(default=3000, ge=1)
    # Tool rounds per turn; past it the model must answer without tools.
    max_tool_rounds: int = Field(default=5, ge=0, le=25)
    # Tool calls run per model round; the model is told the rest were not run.
    max_tool_calls_per_round: int = Field(default=8, ge=1, le=128)

    memory_enabled: bool = True
    memory_search_timeout_s: float = Field(default=0.25, gt=0)
    memory_search_limit: int = Field(default=5, ge=1, le=100)
    # Facts below this similarity are noise and stay out of the prompt; the memory service
    # reads the same MEMORY_MIN_SCORE as its search default (see services/memory/README.md).
    memory_min_score: float = Field(default=0.25, ge=0, le=1)

    evals_enabled: bool = True
    # Deadline of one outbox delivery (a memory write runs the extraction model: minutes
    # are possible on a slow model, seconds are normal).
    handoff_timeout_s: float = Field(default=30.0, gt=0)
    # Retries of a hand-off back off exponentially (with jitter) up to this.
    handoff_max_backoff_s: float = Field(default=300.0, gt=0)

    checkpoint_pool_min_size: int = Field(default=2, ge=1, le=200)
    checkpoint_pool_max_size: int = Field(default=10, ge=1, le=200)

    # A replica renews the lease of each run it executes every third of this; a run whose
    # lease ran out (its replica died) is failed by another replica, kept in the history
    # as interrupted, within about this long.
    run_lease_s: float = Field(default=30.0, ge=1.0, le=600)
    # Events of finished runs are kept this long for clients that resume late; the run
    # record and the history stay.
    run_events_ttl_s: float = Field(default=3600.0, ge=1.0)
    # Events are written in batches at most this far apart (followers on the executing
    # replica get each one at once).
    run_events_flush_ms: int = Field(default=25, ge=1, le=1000)
    # Turns pending or running per user, across every replica.
    max_active_runs_per_user: int = Field(default=4, ge=1, le=1000)
    # Runs this replica executes at once (0: no cap). Past it a new turn is refused at once
    # with UNAVAILABLE and a one-second retry hint (503 + Retry-After through the gateway; a
    # gRPC client's next attempt may reach another replica), and queued runs stay pending in
    # Postgres until a replica has room: an overloaded replica stops taking work instead of
    # slowing down every turn it already has.
    max_running_runs: int = Field(default=100, ge=0)

    # Tools whose calls wait for a person's approval (comma-separated; `*` for all). A
    # call of `ask_user` always waits for the user's answer.
    tools_require_approval: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["web_search"])
    # An interrupt not decided within this is resolved as REJECT and the run goes on.
    approval_ttl_s: float = Field(default=900.0, ge=1.0)

    @field_validator("tools_require_approval", mode="before")
    @classmethod
    def _split_tools(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    web_search_enabled: bool = False
    web_search_timeout_s: float = Field(default=5.0, gt=0)
    web_search_max_results: int = Field(default=5, ge=1, le=20)
