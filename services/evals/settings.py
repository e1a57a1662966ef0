"""Settings of the evals service and its CLI (on top of the shared, the LLM and the Langfuse ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from runtime.langfuse_settings import LangfuseSettings
from runtime.llm_settings import LLMSettings
from runtime.settings import TokenClientSettings

PACKAGE_DIR = Path(__file__).parent


class EvalsSettings(TokenClientSettings, LLMSettings, LangfuseSettings):
    grpc_port: int = Field(default=50055, ge=0, le=65535)
    metrics_port: int = Field(default=9105, ge=0, le=65535)

    # Empty means LLM_MODELS in order (the primary, then the fallbacks); a model named here,
    # or by a metric file's `model:`, judges alone (no fallback: scores of different judges
    # are not comparable). Retries are LLM_MAX_ATTEMPTS / LLM_BACKOFF_*, as in every service.
    judge_model: str = ""
    judge_concurrency: int = Field(default=8, ge=1, le=256)
    evals_metrics_dir: Path = PACKAGE_DIR / "metrics"
    # A pair claimed by a run that died (replica killed) is claimable again after this.
    evals_claim_timeout_s: float = Field(default=900.0, gt=0)

    # Where traces come from: `mesh` (RecordTrace only) or `langfuse` (also imported
    # from Langfuse at the start of every run; needs LANGFUSE_PUBLIC_KEY/SECRET_KEY).
    evals_trace_source: Literal["mesh", "langfuse"] = "mesh"
    evals_langfuse_lookback_h: float = Field(default=24.0, gt=0)
    evals_langfuse_import_limit: int = Field(default=1000, ge=1, le=100_000)

    # The CLI (`run`, `golden`) side: where to call and as whom.
    evals_addr: str = "127.0.0.1:50055"
    sessions_addr: str = "127.0.0.1:50052"
    agent_addr: str = "127.0.0.1:50053"
    evals_admin_email: str = ""
    evals_admin_password: SecretStr | None = None
    evals_call_timeout_s: float = Field(default=30.0, gt=0)
    evals_run_timeout_s: float = Field(default=3600.0, gt=0)
    evals_golden_dataset: Path = PACKAGE_DIR / "datasets" / "golden.jsonl"
    # The golden gate registers a throwaway user per run under this domain (no mail is sent).
    evals_golden_email_domain: str = "golden.agentmesh.dev"

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.evals_trace_source == "langfuse" and not self.langfuse_enabled:
            problems.append("EVALS_TRACE_SOURCE=langfuse needs LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY")
        return problems
