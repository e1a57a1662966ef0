"""One evaluation run through the evals service, shared by `run` and `golden`."""

from __future__ import annotations

import sys

import grpc
from tqdm import tqdm

from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from services.evals.client.login import CommandError, bearer
from services.evals.settings import EvalsSettings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_THRESHOLD_CROSSED = 2


async def evaluate(
    settings: EvalsSettings, token: str, request: evals_pb2.RunEvaluationRequest, *, progress_bar: bool = True
) -> tuple[evals_pb2.EvaluationReport, dict[str, evals_pb2.Metric]]:
    """Runs one evaluation, feeding a progress bar from the stream; returns the report."""
    async with grpc.aio.insecure_channel(settings.evals_addr) as channel:
        stub = evals_pb2_grpc.EvalServiceStub(channel)
        listed = await stub.ListMetrics(
            evals_pb2.ListMetricsRequest(), metadata=bearer(token), timeout=settings.evals_call_timeout_s
        )
        bar = tqdm(desc="Evaluating traces", unit="judgement", disable=not progress_bar, file=sys.stderr)
        report = None
        with bar:
            async for event in stub.RunEvaluation(
                request, metadata=bearer(token), timeout=settings.evals_run_timeout_s
            ):
                if event.HasField("report"):
                    report = event.report
                    continue
                progress = event.progress
                bar.total = progress.graded + progress.failed + progress.remaining
                bar.update(progress.graded + progress.failed - bar.n)
                bar.set_postfix(failed=progress.failed, metric=progress.metric, refresh=False)
    if report is None:
        raise CommandError("the evaluation stream ended without a report")
    return report, {m.name: m for m in listed.metrics}
