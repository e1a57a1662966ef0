"""The evals service's tables (schema `evals`): traces and their scores, and every query.

A score row is the state of one (trace, metric) pair: `pending` while a run holds the
claim, then `ok` or `failed`. The primary key on the pair is what stops two runs (or two
replicas) from grading it twice: claiming is an insert that only takes over a row that
failed, went stale, or is being regraded on purpose.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.erasure import add_counts

# Traces in one statement (a batch, or one alone); a trace id already recorded is skipped.
INSERT_TRACES = text(
    "INSERT INTO traces (trace_id, session_id, user_id, input, output, model, latency_ms, prompt_tokens,"
    " completion_tokens, tool_calls, created_at)"
    " SELECT t.trace_id, t.session_id, t.user_id, t.input, t.output, t.model, t.latency_ms, t.prompt_tokens,"
    " t.completion_tokens, CAST(t.tool_calls AS jsonb), COALESCE(t.created_at, clock_timestamp())"
    " FROM unnest(CAST(:trace_ids AS text[]), CAST(:session_ids AS text[]), CAST(:user_ids AS text[]),"
    " CAST(:inputs AS text[]), CAST(:outputs AS text[]), CAST(:models AS text[]), CAST(:latencies AS bigint[]),"
    " CAST(:prompt_tokens AS integer[]), CAST(:completion_tokens AS integer[]), CAST(:tool_calls AS text[]),"
    " CAST(:created_ats AS timestamptz[]))"
    " AS t(trace_id, session_id, user_id, input, output, model, latency_ms, prompt_tokens, completion_tokens,"
    " tool_calls, created_at)"
    # One insert order for every batch, so two sharing trace ids queue instead of possibly
    # deadlocking (each holding an id the other waits for).
    " ORDER BY t.trace_id"
    " ON CONFLICT (trace_id) DO NOTHING RETURNING trace_id"
)
TRACE_OWNER = text("SELECT user_id FROM traces WHERE trace_id = :trace_id")
SESSION_HAS_OTHER_OWNER = text(
    "SELECT EXISTS (SELECT 1 FROM traces WHERE session_id = :session_id AND user_id <> :user_id)"
)
# Traces with at least one selected metric neither graded (unless regrading) nor held by
# a live claim; then one claim row per (trace, metric), taking over only rows that
# failed, went stale, or are regraded. A concurrent run blocks on the primary key and,
# once the first commits, sees a fresh `pending` row and skips it.
CLAIM_PAIRS = text(
    """
    WITH candidates AS (
        SELECT t.trace_id, t.recorded_at FROM traces t
        WHERE (CAST(:since AS timestamptz) IS NULL OR t.recorded_at >= CAST(:since AS timestamptz))
          AND (CAST(:session_id AS text) = '' OR t.session_id = CAST(:session_id AS text))
          AND EXISTS (
            SELECT 1 FROM unnest(CAST(:metrics AS text[])) AS m(name)
            WHERE NOT EXISTS (
              SELECT 1 FROM scores s WHERE s.trace_id = t.trace_id AND s.metric = m.name
                AND ((s.status = 'ok' AND NOT CAST(:regrade AS boolean))
                     OR (s.status = 'pending'
                         AND s.claimed_at >= clock_timestamp() - make_interval(secs => :claim_timeout_s)))))
        ORDER BY t.recorded_at, t.trace_id
        LIMIT :limit
    )
    INSERT INTO scores AS s (trace_id, metric, status, run_id, claimed_at)
    SELECT c.trace_id, m.name, 'pending', :run_id, clock_timestamp()
    FROM candidates c CROSS JOIN unnest(CAST(:metrics AS text[])) AS m(name)
    ON CONFLICT (trace_id, metric) DO UPDATE
      SET status = 'pending', run_id = EXCLUDED.run_id, claimed_at = EXCLUDED.claimed_at, error = ''
      WHERE s.status = 'failed'
         OR (s.status = 'ok' AND CAST(:regrade AS boolean))
         OR (s.status = 'pending' AND s.claimed_at < clock_timestamp() - make_interval(secs => :claim_timeout_s))
    RETURNING s.trace_id, s.metric
    """
)
LOAD_TRACES = text(
    "SELECT trace_id, session_id, user_id, input, output, model, latency_ms, prompt_tokens, completion_tokens,"
    " tool_calls, created_at, recorded_at FROM traces WHERE trace_id = ANY(CAST(:trace_ids AS text[]))"
)
# Only the run that holds the claim may settle it: a run presumed dead whose pair was
# taken over must not overwrite the new holder's result.
RECORD_SCORE = text(
    "UPDATE scores SET status = 'ok', score = :score, reasoning = :reasoning, error = '', judge_model = :judge_model,"
    " attempts = :attempts, graded_at = clock_timestamp()"
    " WHERE trace_id = :trace_id AND metric = :metric AND run_id = :run_id AND status = 'pending'"
    " RETURNING graded_at"
)
RECORD_FAILURE = text(
    "UPDATE scores SET status = 'failed', error = :error, judge_model = :judge_model, attempts = :attempts,"
    " graded_at = clock_timestamp()"
    " WHERE trace_id = :trace_id AND metric = :metric AND run_id = :run_id AND status = 'pending'"
)
RELEASE_CLAIMS = text(
    "UPDATE scores SET status = 'failed', error = :error WHERE run_id = :run_id AND status = 'pending'"
)
LIST_SCORES = text(
    """
    SELECT s.trace_id, s.metric, s.score, s.reasoning, s.judge_model, s.graded_at, t.session_id
    FROM scores s JOIN traces t ON t.trace_id = s.trace_id
    WHERE s.status = 'ok'
      AND (CAST(:metric AS text) = '' OR s.metric = CAST(:metric AS text))
      AND (CAST(:trace_id AS text) = '' OR s.trace_id = CAST(:trace_id AS text))
      AND (CAST(:session_id AS text) = '' OR t.session_id = CAST(:session_id AS text))
      AND (CAST(:owner AS text) IS NULL OR t.user_id = CAST(:owner AS text))
      AND (CAST(:after_graded_at AS timestamptz) IS NULL
           OR (s.graded_at, s.trace_id, s.metric)
              < (CAST(:after_graded_at AS timestamptz), CAST(:after_trace_id AS text), CAST(:after_metric AS text)))
    ORDER BY s.graded_at DESC, s.trace_id DESC, s.metric DESC
    LIMIT :limit
    """
)
SUMMARY = text(
    "SELECT count(*) AS count, avg(score) AS mean,"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY score) AS p50,"
    " percentile_cont(0.9) WITHIN GROUP (ORDER BY score) AS p90"
    " FROM scores WHERE metric = :metric AND status = 'ok'"
    " AND graded_at >= clock_timestamp() - make_interval(secs => :window_s)"
)


@dataclass(frozen=True)
class ToolCallRecord:
    name: str
    arguments_json: str
    result: str
    decision: str = ""


@dataclass(frozen=True)
class TraceRecord:
    trace_id: str
    session_id: str
    user_id: str
    input: str
    output: str
    model: str = ""
    latency_ms: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    created_at: datetime | None = None


@dataclass(frozen=True)
class ScoreRow:
    trace_id: str
    metric: str
    score: float
    reasoning: str
    judge_model: str
    graded_at: datetime
    session_id: str


@dataclass(frozen=True)
class MetricSummary:
    count: int
    mean: float
    p50: float
    p90: float


def _trace(row) -> TraceRecord:
    calls = [ToolCallRecord(c["name"], c["arguments_json"], c["result"], c.get("decision", "")) for c in row.tool_calls]
    return TraceRecord(
        row.trace_id,
        row.session_id,
        row.user_id,
        row.input,
        row.output,
        row.model,
        row.latency_ms,
        row.prompt_tokens,
        row.completion_tokens,
        calls,
        row.created_at,
    )


# Account erasure (runtime.erasure): the user's traces, by owner or by one of
# their sessions (traces recorded before evals knew the user), and their scores.
OPEN_ERASURE = text("INSERT INTO erasures (erasure_id) VALUES (:erasure_id) ON CONFLICT DO NOTHING")
LOCK_ERASURE = text("SELECT counts FROM erasures WHERE erasure_id = :erasure_id FOR UPDATE")
USER_TRACES = "SELECT trace_id FROM traces WHERE user_id = :user_id OR session_id = ANY(CAST(:session_ids AS text[]))"
ERASE_SCORES = text(f"DELETE FROM scores WHERE trace_id IN ({USER_TRACES})")  # noqa: S608 (a constant)
ERASE_TRACES = text(f"DELETE FROM traces WHERE trace_id IN ({USER_TRACES})")  # noqa: S608 (a constant)
RECORD_ERASURE = text(
    "UPDATE erasures SET counts = CAST(:counts AS jsonb), erased_at = clock_timestamp() WHERE erasure_id = :erasure_id"
)


class EvalStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert_trace(self, trace: TraceRecord) -> bool:
        return (await self.insert_traces([trace]))[0]

    async def insert_traces(self, traces: list[TraceRecord]) -> list[bool]:
        """One statement for the batch; per trace, whether it was new (a trace id repeated
        within the batch is new once, as if sent one after the other)."""
        params = {
            "trace_ids": [t.trace_id for t in traces],
            "session_ids": [t.session_id for t in traces],
            "user_ids": [t.user_id for t in traces],
            "inputs": [t.input for t in traces],
            "outputs": [t.output for t in traces],
            "models": [t.model for t in traces],
            "latencies": [t.latency_ms for t in traces],
            "prompt_tokens": [t.prompt_tokens for t in traces],
            "completion_tokens": [t.completion_tokens for t in traces],
            "tool_calls": [json.dumps([c.__dict__ for c in t.tool_calls]) for t in traces],
            "created_ats": [t.created_at for t in traces],
        }
        async with self._engine.begin() as conn:
            inserted = {row.trace_id for row in await conn.execute(INSERT_TRACES, params)}
        created = []
        for trace in traces:
            created.append(trace.trace_id in inserted)
            inserted.discard(trace.trace_id)
        return created

    async def trace_owner(self, trace_id: str) -> str | None:
        async with self._engine.connect() as conn:
            return (await conn.execute(TRACE_OWNER, {"trace_id": trace_id})).scalar_one_or_none()

    async def session_has_other_owner(self, session_id: str, user_id: str) -> bool:
        async with self._engine.connect() as conn:
            params = {"session_id": session_id, "user_id": user_id}
            return bool((await conn.execute(SESSION_HAS_OTHER_OWNER, params)).scalar_one())

    async def claim_pairs(
        self,
        *,
        run_id: uuid.UUID,
        metrics: list[str],
        since: datetime | None,
        session_id: str,
        limit: int,
        regrade: bool,
        claim_timeout_s: float,
    ) -> list[tuple[str, str]]:
        params = {
            "run_id": run_id,
            "metrics": metrics,
            "since": since,
            "session_id": session_id,
            "limit": limit,
            "regrade": regrade,
            "claim_timeout_s": claim_timeout_s,
        }
        async with self._engine.begin() as conn:
            return [(row.trace_id, row.metric) for row in (await conn.execute(CLAIM_PAIRS, params)).all()]

    async def load_traces(self, trace_ids: list[str]) -> dict[str, TraceRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(LOAD_TRACES, {"trace_ids": trace_ids})).all()
        return {row.trace_id: _trace(row) for row in rows}

    async def record_score(
        self, run_id: uuid.UUID, trace_id: str, metric: str, score: float, reasoning: str, model: str, attempts: int
    ) -> datetime | None:
        params = {
            "run_id": run_id,
            "trace_id": trace_id,
            "metric": metric,
            "score": score,
            "reasoning": reasoning,
            "judge_model": model,
            "attempts": attempts,
        }
        async with self._engine.begin() as conn:
            return (await conn.execute(RECORD_SCORE, params)).scalar_one_or_none()

    async def record_failure(
        self, run_id: uuid.UUID, trace_id: str, metric: str, error: str, model: str, attempts: int
    ) -> None:
        params = {
            "run_id": run_id,
            "trace_id": trace_id,
            "metric": metric,
            "error": error[:2000],
            "judge_model": model,
            "attempts": attempts,
        }
        async with self._engine.begin() as conn:
            await conn.execute(RECORD_FAILURE, params)

    async def release_claims(self, run_id: uuid.UUID, reason: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(RELEASE_CLAIMS, {"run_id": run_id, "error": reason})

    async def list_scores(
        self,
        *,
        metric: str,
        trace_id: str,
        session_id: str,
        owner: str | None,
        limit: int,
        after: tuple[datetime, str, str] | None,
    ) -> list[ScoreRow]:
        params = {
            "metric": metric,
            "trace_id": trace_id,
            "session_id": session_id,
            "owner": owner,
            "limit": limit,
            "after_graded_at": after[0] if after else None,
            "after_trace_id": after[1] if after else None,
            "after_metric": after[2] if after else None,
        }
        async with self._engine.connect() as conn:
            rows = (await conn.execute(LIST_SCORES, params)).all()
        return [
            ScoreRow(r.trace_id, r.metric, r.score, r.reasoning, r.judge_model, r.graded_at, r.session_id) for r in rows
        ]

    async def summary(self, metric: str, window_s: int) -> MetricSummary:
        async with self._engine.connect() as conn:
            row = (await conn.execute(SUMMARY, {"metric": metric, "window_s": window_s})).one()
        return MetricSummary(row.count, row.mean or 0.0, row.p50 or 0.0, row.p90 or 0.0)

    async def erase_user(self, erasure_id: str, user_id: str, session_ids: list[str]) -> dict[str, int]:
        """Account deletion: the running totals of this erasure (scores go before their
        traces, which would cascade them uncounted)."""
        erasure = uuid.UUID(erasure_id)
        params = {"user_id": user_id, "session_ids": session_ids}
        async with self._engine.begin() as conn:
            await conn.execute(OPEN_ERASURE, {"erasure_id": erasure})
            earlier = (await conn.execute(LOCK_ERASURE, {"erasure_id": erasure})).scalar_one()
            scores = int((await conn.execute(ERASE_SCORES, params)).rowcount)
            traces = int((await conn.execute(ERASE_TRACES, params)).rowcount)
            counts = add_counts(earlier, {"traces": traces, "scores": scores})
            await conn.execute(RECORD_ERASURE, {"erasure_id": erasure, "counts": json.dumps(counts)})
        return counts
