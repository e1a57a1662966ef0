"""LLM-as-a-judge: one metric prompt, one trace, a score 0-1 with reasoning.

The judge asks for structured output (a strict JSON schema) through the mesh's one LLM
client (runtime/llm): retries with backoff honouring `retry-after`, a malformed
answer retried like a failed call, a circuit breaker per judge model. It never raises for
a bad judgement: the caller gets a `JudgeFailure` for that one metric and the run goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from llm_tasks import JUDGEMENT
from runtime.errors import Unavailable
from runtime.llm import LLMClient
from runtime.logging import get_logger
from services.evals.metrics_catalog import MetricDefinition
from services.evals.store import TraceRecord

log = get_logger(__name__)

JUDGEMENT_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "A score between 0.0 and 1.0"},
        "reasoning": {"type": "string", "description": "A concise explanation for the score"},
    },
    "required": ["score", "reasoning"],
    "additionalProperties": False,
}


class Judgement(BaseModel):
    """The judge's answer; a score outside 0-1 is a malformed answer, not a clamp."""

    score: float = Field(ge=0, le=1)
    reasoning: str = Field(max_length=10_000)


@dataclass(frozen=True)
class JudgeSuccess:
    judgement: Judgement
    model: str
    attempts: int
    seconds: float


@dataclass(frozen=True)
class JudgeFailure:
    error: str
    model: str
    attempts: int
    seconds: float


JudgeOutcome = JudgeSuccess | JudgeFailure


def judge_document(metric: MetricDefinition, trace: TraceRecord) -> dict[str, Any]:
    return {"metric": metric.name, "input": trace.input, "output": trace.output}


class Judge:
    def __init__(self, client: LLMClient, *, judge_model: str) -> None:
        self._client = client
        self._judge_model = judge_model

    def model_for(self, metric: MetricDefinition) -> str:
        """The metric's `model:`, else JUDGE_MODEL; empty means LLM_MODELS with fallback."""
        return metric.model or self._judge_model

    async def judge_trace(self, metric: MetricDefinition, trace: TraceRecord) -> JudgeOutcome:
        chain = self._client.chain_for(self.model_for(metric))
        started = time.perf_counter()
        try:
            judgement, answer = await chain.complete_json(
                name=JUDGEMENT,
                schema=JUDGEMENT_SCHEMA,
                instructions=metric.prompt,
                document=judge_document(metric, trace),
                parse=Judgement.model_validate,
            )
        except Unavailable as exc:
            attempts = getattr(exc, "attempts", 0)
            log.warning("judgement_failed", metric=metric.name, trace_id=trace.trace_id, error=str(exc))
            model = self.model_for(metric) or chain.preferred_model()
            return JudgeFailure(str(exc), model, attempts, time.perf_counter() - started)
        return JudgeSuccess(judgement, answer.model, answer.attempts, time.perf_counter() - started)
