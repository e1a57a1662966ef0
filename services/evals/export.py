"""Where a recorded score goes besides Postgres: Prometheus always, Langfuse when its
keys are set, so Grafana (or Langfuse) can chart "hallucination over 30 days"."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Protocol

from prometheus_client import Counter, Histogram

from runtime.logging import get_logger

log = get_logger(__name__)

SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

eval_score = Histogram(
    "eval_score", "Judge scores (0-1) as they are recorded, by metric.", ["metric"], buckets=SCORE_BUCKETS
)
eval_judgements_total = Counter(
    "eval_judgements_total", "Judgements finished, by metric and status (ok or failed).", ["metric", "status"]
)
eval_judge_seconds = Histogram(
    "eval_judge_seconds",
    "Time to a final judgement, retries included, by metric.",
    ["metric"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LANGFUSE_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class ScoreSink(Protocol):
    def score_recorded(self, trace_id: str, metric: str, score: float, reasoning: str) -> None: ...
    async def close(self) -> None: ...


def observe_judgement(metric: str, *, score: float | None, seconds: float) -> None:
    eval_judge_seconds.labels(metric).observe(seconds)
    if score is None:
        eval_judgements_total.labels(metric, "failed").inc()
        return
    eval_judgements_total.labels(metric, "ok").inc()
    eval_score.labels(metric).observe(score)


def langfuse_trace_id(trace_id: str) -> str:
    """Langfuse (OpenTelemetry) trace ids are 32 lower-case hex digits: a UUID maps to its
    hex, anything else to the SDK's deterministic id for that seed."""
    if LANGFUSE_TRACE_ID.match(trace_id):
        return trace_id
    try:
        return uuid.UUID(trace_id).hex
    except ValueError:
        from langfuse import Langfuse

        return Langfuse.create_trace_id(seed=trace_id)


class NoScoreSink:
    def score_recorded(self, trace_id: str, metric: str, score: float, reasoning: str) -> None:
        return None

    async def close(self) -> None:
        return None


class LangfuseScoreSink:
    """Scores as Langfuse scores; the SDK batches them in its own thread."""

    def __init__(self, client) -> None:
        self._client = client

    def score_recorded(self, trace_id: str, metric: str, score: float, reasoning: str) -> None:
        try:
            self._client.create_score(
                trace_id=langfuse_trace_id(trace_id), name=metric, value=score, comment=reasoning, data_type="NUMERIC"
            )
        except Exception:
            # Langfuse is an extra view of scores that are already stored; it never fails a run.
            log.exception("langfuse_score_failed", metric=metric)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.shutdown)
