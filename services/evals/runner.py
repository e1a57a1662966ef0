"""An evaluation run: claim ungraded (trace, metric) pairs, judge them with bounded
concurrency, store every outcome, and report progress as each judgement finishes.

The claim is one INSERT in Postgres (see `store.CLAIM_PAIRS`), so runs on different
replicas split the work instead of repeating it. A run that stops early (client gone)
hands its unfinished pairs back as failed, which the next run retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from runtime.errors import InvalidArgument
from runtime.logging import get_logger
from services.evals.export import ScoreSink, observe_judgement
from services.evals.judge import Judge, JudgeSuccess
from services.evals.langfuse_source import LangfuseTraceImporter
from services.evals.metrics_catalog import MetricCatalog, MetricDefinition
from services.evals.store import EvalStore, TraceRecord

log = get_logger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
WORST_PER_METRIC = 3
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RunRequest:
    metrics: list[str]
    since: datetime | None
    session_id: str
    limit: int
    regrade: bool


@dataclass(frozen=True)
class Judged:
    trace_id: str
    metric: str
    score: float | None
    reasoning: str


@dataclass(frozen=True)
class Progress:
    graded: int
    failed: int
    remaining: int
    trace_id: str
    metric: str


@dataclass(frozen=True)
class WorstTrace:
    trace_id: str
    score: float
    reasoning: str


@dataclass
class MetricResult:
    metric: MetricDefinition
    scores: list[Judged] = field(default_factory=list)
    failed: int = 0

    @property
    def mean(self) -> float:
        return sum(j.score or 0.0 for j in self.scores) / len(self.scores) if self.scores else 0.0

    @property
    def threshold_crossed(self) -> bool:
        return bool(self.scores) and self.metric.crosses_threshold(self.mean)

    def worst(self) -> list[WorstTrace]:
        ranked = sorted(self.scores, key=lambda j: (self.metric.worse_first(j.score or 0.0), j.trace_id))
        return [WorstTrace(j.trace_id, j.score or 0.0, j.reasoning) for j in ranked[:WORST_PER_METRIC]]


@dataclass(frozen=True)
class Report:
    traces: int
    graded: int
    failed: int
    metrics: list[MetricResult]


class RunTally:
    def __init__(self, metrics: list[MetricDefinition], total: int, traces: int) -> None:
        self.results = {m.name: MetricResult(m) for m in metrics}
        self.total = total
        self.traces = traces
        self.graded = 0
        self.failed = 0

    def add(self, judged: Judged) -> Progress:
        result = self.results[judged.metric]
        if judged.score is None:
            self.failed += 1
            result.failed += 1
        else:
            self.graded += 1
            result.scores.append(judged)
        remaining = self.total - self.graded - self.failed
        return Progress(self.graded, self.failed, remaining, judged.trace_id, judged.metric)

    def report(self) -> Report:
        return Report(self.traces, self.graded, self.failed, list(self.results.values()))


def run_limit(requested: int) -> int:
    if not 0 <= requested <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be between 0 and {MAX_LIMIT}", reason="LIMIT_INVALID")
    return requested or DEFAULT_LIMIT


class EvaluationRunner:
    def __init__(
        self,
        store: EvalStore,
        catalog: MetricCatalog,
        judge: Judge,
        sink: ScoreSink,
        *,
        concurrency: int,
        claim_timeout_s: float,
        importer: LangfuseTraceImporter | None = None,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._judge = judge
        self._sink = sink
        self._concurrency = concurrency
        # Shared by every run in this process: JUDGE_CONCURRENCY bounds the load this
        # replica puts on the judge model, however many runs are streaming.
        self._slots = asyncio.Semaphore(concurrency)
        self._claim_timeout_s = claim_timeout_s
        self._importer = importer

    async def run(self, request: RunRequest) -> AsyncIterator[Progress | Report]:
        metrics = self._catalog.select(request.metrics)
        limit = run_limit(request.limit)
        if self._importer is not None:
            await self._import_from_langfuse()
        run_id = uuid.uuid4()
        pairs = await self._store.claim_pairs(
            run_id=run_id,
            metrics=[m.name for m in metrics],
            since=request.since,
            session_id=request.session_id,
            limit=limit,
            regrade=request.regrade,
            claim_timeout_s=self._claim_timeout_s,
        )
        traces = await self._store.load_traces(sorted({trace_id for trace_id, _ in pairs}))
        order = {m.name: i for i, m in enumerate(metrics)}
        pairs.sort(key=lambda p: (traces[p[0]].created_at or EPOCH, p[0], order[p[1]]))
        log.info("evaluation_started", run_id=str(run_id), pairs=len(pairs), traces=len(traces))
        tally = RunTally(metrics, len(pairs), len(traces))
        async for judged in self._judge_all(run_id, pairs, traces):
            yield tally.add(judged)
        report = tally.report()
        log.info("evaluation_finished", run_id=str(run_id), graded=report.graded, failed=report.failed)
        yield report

    async def _import_from_langfuse(self) -> None:
        assert self._importer is not None
        try:
            await self._importer.import_recent()
        except Exception:
            # The traces already stored can still be graded; the next run imports again.
            log.exception("langfuse_import_failed")

    async def _judge_all(
        self, run_id: uuid.UUID, pairs: list[tuple[str, str]], traces: dict[str, TraceRecord]
    ) -> AsyncIterator[Judged]:
        todo = iter(pairs)
        finished: asyncio.Queue[Judged | BaseException] = asyncio.Queue()

        async def worker() -> None:
            for trace_id, metric in todo:
                try:
                    judged = await self._judge_pair(run_id, traces[trace_id], self._catalog.get(metric))
                except Exception as exc:
                    await finished.put(exc)
                    return
                await finished.put(judged)

        workers = [asyncio.create_task(worker()) for _ in range(min(self._concurrency, len(pairs)))]
        done = 0
        try:
            while done < len(pairs):
                item = await finished.get()
                if isinstance(item, BaseException):
                    raise item
                done += 1
                yield item
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if done < len(pairs):
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._store.release_claims(run_id, "the run stopped before this judgement"))

    async def _judge_pair(self, run_id: uuid.UUID, trace: TraceRecord, metric: MetricDefinition) -> Judged:
        async with self._slots:
            outcome = await self._judge.judge_trace(metric, trace)
        if isinstance(outcome, JudgeSuccess):
            judgement = outcome.judgement
            await self._store.record_score(
                run_id,
                trace.trace_id,
                metric.name,
                judgement.score,
                judgement.reasoning,
                outcome.model,
                outcome.attempts,
            )
            observe_judgement(metric.name, score=judgement.score, seconds=outcome.seconds)
            self._sink.score_recorded(trace.trace_id, metric.name, judgement.score, judgement.reasoning)
            return Judged(trace.trace_id, metric.name, judgement.score, judgement.reasoning)
        await self._store.record_failure(
            run_id, trace.trace_id, metric.name, outcome.error, outcome.model, outcome.attempts
        )
        observe_judgement(metric.name, score=None, seconds=outcome.seconds)
        return Judged(trace.trace_id, metric.name, None, outcome.error)
