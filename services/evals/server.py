"""agentmesh.evals.v1.EvalService: parse, authorize, call the domain, build messages."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from runtime.erasure import erasure_request
from runtime.principal import current_principal, require_admin
from services.evals.metrics_catalog import MetricCatalog, MetricDefinition
from services.evals.runner import EvaluationRunner, Progress, Report, RunRequest
from services.evals.scoreboard import Scoreboard
from services.evals.store import EvalStore, ScoreRow
from services.evals.traces import record_trace, record_traces

DIRECTIONS = {
    "lower": evals_pb2.Metric.DIRECTION_LOWER_IS_BETTER,
    "higher": evals_pb2.Metric.DIRECTION_HIGHER_IS_BETTER,
}


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def metric_message(metric: MetricDefinition) -> evals_pb2.Metric:
    return evals_pb2.Metric(
        name=metric.name,
        description=metric.description,
        direction=DIRECTIONS[metric.direction],
        threshold=metric.threshold,
    )


def score_message(row: ScoreRow) -> evals_pb2.Score:
    return evals_pb2.Score(
        trace_id=row.trace_id,
        metric=row.metric,
        score=row.score,
        reasoning=row.reasoning,
        judge_model=row.judge_model,
        created_at=timestamp(row.graded_at),
        session_id=row.session_id,
    )


def run_event(event: Progress | Report) -> evals_pb2.RunEvaluationResponse:
    if isinstance(event, Progress):
        progress = evals_pb2.EvaluationProgress(
            graded=event.graded,
            failed=event.failed,
            remaining=event.remaining,
            trace_id=event.trace_id,
            metric=event.metric,
        )
        return evals_pb2.RunEvaluationResponse(progress=progress)
    metrics = [
        evals_pb2.MetricReport(
            metric=r.metric.name,
            count=len(r.scores),
            failed=r.failed,
            mean=r.mean,
            worst=[evals_pb2.WorstTrace(trace_id=w.trace_id, score=w.score, reasoning=w.reasoning) for w in r.worst()],
            threshold_crossed=r.threshold_crossed,
        )
        for r in event.metrics
    ]
    report = evals_pb2.EvaluationReport(traces=event.traces, graded=event.graded, failed=event.failed, metrics=metrics)
    return evals_pb2.RunEvaluationResponse(report=report)


class EvalServicer(evals_pb2_grpc.EvalServiceServicer):
    def __init__(self, store: EvalStore, catalog: MetricCatalog, runner: EvaluationRunner) -> None:
        self._store = store
        self._catalog = catalog
        self._runner = runner
        self._scoreboard = Scoreboard(store, catalog)

    async def RecordTrace(self, request: evals_pb2.RecordTraceRequest, context: grpc.aio.ServicerContext):
        created = await record_trace(self._store, request.trace, current_principal())
        return evals_pb2.RecordTraceResponse(created=created)

    async def BatchRecordTraces(self, request: evals_pb2.BatchRecordTracesRequest, context: grpc.aio.ServicerContext):
        created = await record_traces(self._store, [r.trace for r in request.requests], current_principal())
        return evals_pb2.BatchRecordTracesResponse(
            responses=[evals_pb2.RecordTraceResponse(created=c) for c in created]
        )

    async def ListMetrics(self, request: evals_pb2.ListMetricsRequest, context: grpc.aio.ServicerContext):
        return evals_pb2.ListMetricsResponse(metrics=[metric_message(m) for m in self._catalog])

    async def RunEvaluation(self, request: evals_pb2.RunEvaluationRequest, context: grpc.aio.ServicerContext):
        require_admin()
        since = request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else None
        run = RunRequest(list(request.metrics), since, request.session_id, request.limit, request.regrade)
        async for event in self._runner.run(run):
            yield run_event(event)

    async def ListScores(self, request: evals_pb2.ListScoresRequest, context: grpc.aio.ServicerContext):
        rows, token = await self._scoreboard.list(
            current_principal(),
            metric=request.metric,
            trace_id=request.trace_id,
            session_id=request.session_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return evals_pb2.ListScoresResponse(scores=[score_message(r) for r in rows], next_page_token=token)

    async def GetMetricSummary(self, request: evals_pb2.GetMetricSummaryRequest, context: grpc.aio.ServicerContext):
        require_admin()
        window, summary = await self._scoreboard.summary(request.metric, request.window)
        return evals_pb2.GetMetricSummaryResponse(
            metric=request.metric,
            window=window,
            count=summary.count,
            mean=summary.mean,
            p50=summary.p50,
            p90=summary.p90,
        )

    async def EraseUserData(self, request: evals_pb2.EraseUserDataRequest, context: grpc.aio.ServicerContext):
        erasure = erasure_request(request)
        counts = await self._store.erase_user(erasure.erasure_id, erasure.user_id, list(erasure.session_ids))
        return evals_pb2.EraseUserDataResponse(counts=counts)
