"""LLM-as-a-judge: one metric prompt, one trace, a score 0-1 with reasoning.

The judge asks an OpenAI-compatible model for structured output (a strict JSON schema),
validates the answer with pydantic, and retries a malformed answer or a failed call a
few times with a short backoff. It never raises for a bad judgement: the caller gets a
`JudgeFailure` for that one metric and the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

import openai
from pydantic import BaseModel, Field, ValidationError

from services.common.logging import get_logger
from services.evals.metrics_catalog import MetricDefinition
from services.evals.store import TraceRecord

log = get_logger(__name__)

SCHEMA_NAME = "judgement"
JUDGEMENT_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "A score between 0.0 and 1.0"},
        "reasoning": {"type": "string", "description": "A concise explanation for the score"},
    },
    "required": ["score", "reasoning"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": SCHEMA_NAME, "schema": JUDGEMENT_SCHEMA, "strict": True},
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


class MalformedJudgement(ValueError):
    """The model answered, but not with a valid judgement."""


def judge_messages(metric: MetricDefinition, trace: TraceRecord) -> list[dict[str, str]]:
    document = {"metric": metric.name, "input": trace.input, "output": trace.output}
    return [
        {"role": "system", "content": metric.prompt},
        {"role": "user", "content": json.dumps(document, ensure_ascii=False)},
    ]


def parse_judgement(content: str | None) -> Judgement:
    if not content:
        raise MalformedJudgement("the judge returned no content")
    try:
        return Judgement.model_validate_json(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MalformedJudgement(f"the judge returned an invalid judgement: {first['msg']}") from None


def _retry_after_s(exc: Exception) -> float | None:
    if isinstance(exc, openai.APIStatusError):
        value = exc.response.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None
    return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"judge model answered HTTP {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError):
        return "judge model timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "judge model unreachable"
    return str(exc)


class Judge:
    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        default_model: str,
        max_attempts: int,
        backoff_s: float,
        backoff_max_s: float,
    ) -> None:
        self._client = client
        self._default_model = default_model
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s

    def model_for(self, metric: MetricDefinition) -> str:
        return metric.model or self._default_model

    async def judge_trace(self, metric: MetricDefinition, trace: TraceRecord) -> JudgeOutcome:
        model = self.model_for(metric)
        started = time.perf_counter()
        error = ""
        for attempt in range(1, self._max_attempts + 1):
            try:
                judgement = await self._ask(model, metric, trace)
                return JudgeSuccess(judgement, model, attempt, time.perf_counter() - started)
            except (openai.OpenAIError, MalformedJudgement) as exc:
                error = _describe(exc)
                log.warning(
                    "judgement_failed", metric=metric.name, trace_id=trace.trace_id, attempt=attempt, error=error
                )
                if attempt < self._max_attempts:
                    await asyncio.sleep(self._delay_s(attempt, _retry_after_s(exc)))
        return JudgeFailure(error, model, self._max_attempts, time.perf_counter() - started)

    async def _ask(self, model: str, metric: MetricDefinition, trace: TraceRecord) -> Judgement:
        response = await self._client.chat.completions.create(
            model=model,
            messages=judge_messages(metric, trace),  # type: ignore[arg-type]
            response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
            temperature=0,
        )
        if not response.choices:
            raise MalformedJudgement("the judge returned no choices")
        return parse_judgement(response.choices[0].message.content)

    def _delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self._backoff_max_s)
        # Full jitter keeps many concurrent judgements from retrying in lockstep.
        return random.uniform(0, min(self._backoff_max_s, self._backoff_s * 2 ** (attempt - 1)))
