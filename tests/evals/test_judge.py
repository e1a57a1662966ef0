"""The judge's retries and failures, and progress streaming, on an extra evals replica
whose judge model (`judge-under-test`) and metric files belong to these tests."""

from __future__ import annotations

import time

import grpc
import pytest

from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from tests.support.evals import (
    BROKEN_JUDGE,
    JUDGE_UNDER_TEST,
    OfflineControls,
    metric_report,
    new_session_id,
    record,
    run_evaluation,
)
from tests.support.users import MeshUser


async def test_invalid_json_from_the_judge_is_retried_and_succeeds(
    judge_evals, offline: OfflineControls, user: MeshUser, admin: MeshUser
) -> None:
    session_id = new_session_id()
    await record(judge_evals, user, session_id=session_id)
    await offline.fault(JUDGE_UNDER_TEST, "invalid_json", 1)
    requests_before = await offline.requests_for(JUDGE_UNDER_TEST)

    _, report = await run_evaluation(judge_evals, admin, session_id=session_id, metrics=["toxicity"])

    assert (report.graded, report.failed) == (1, 0)
    assert metric_report(report, "toxicity").mean == pytest.approx(0.0)
    assert await offline.requests_for(JUDGE_UNDER_TEST) - requests_before == 2
    listed = await judge_evals.ListScores(evals_pb2.ListScoresRequest(session_id=session_id), metadata=admin.metadata)
    assert [(s.metric, s.judge_model) for s in listed.scores] == [("toxicity", JUDGE_UNDER_TEST)]


async def test_a_judge_failing_every_time_fails_only_its_metric_and_is_retried_next_run(
    judge_evals, offline: OfflineControls, user: MeshUser, admin: MeshUser
) -> None:
    session_id = new_session_id()
    trace_id = await record(judge_evals, user, session_id=session_id)
    await offline.fault(BROKEN_JUDGE, "500", 3)

    progress, report = await run_evaluation(judge_evals, admin, session_id=session_id)

    broken = metric_report(report, "broken")
    assert (broken.count, broken.failed) == (0, 1)
    assert (report.graded, report.failed) == (5, 1)
    assert progress[-1].failed == 1 and progress[-1].remaining == 0
    assert all(metric_report(report, m.metric).count == 1 for m in report.metrics if m.metric != "broken")
    assert not broken.threshold_crossed
    listed = await judge_evals.ListScores(evals_pb2.ListScoresRequest(trace_id=trace_id), metadata=admin.metadata)
    assert "broken" not in {s.metric for s in listed.scores} and len(listed.scores) == 5

    # The fault is used up (three attempts); the next run retries only the failed pair.
    retry_progress, retry = await run_evaluation(judge_evals, admin, session_id=session_id)
    assert [(p.trace_id, p.metric) for p in retry_progress] == [(trace_id, "broken")]
    assert (retry.graded, retry.failed) == (1, 0)


async def test_progress_events_arrive_while_the_run_is_going(
    judge_evals: evals_pb2_grpc.EvalServiceStub, offline: OfflineControls, user: MeshUser, admin: MeshUser
) -> None:
    session_id = new_session_id()
    for _ in range(3):
        await record(judge_evals, user, session_id=session_id)
    # Every judgement takes 0.4 s; at JUDGE_CONCURRENCY=2 the 6 of them finish in 3 waves.
    await offline.fault(JUDGE_UNDER_TEST, "stall", 6, stall_s=0.4)

    started = time.monotonic()
    arrivals: list[tuple[str, float]] = []
    request = evals_pb2.RunEvaluationRequest(session_id=session_id, metrics=["toxicity", "relevancy"])
    async for event in judge_evals.RunEvaluation(request, metadata=admin.metadata):
        arrivals.append((event.WhichOneof("event"), time.monotonic() - started))

    kinds = [kind for kind, _ in arrivals]
    assert kinds == ["progress"] * 6 + ["report"]
    first_progress, report_at = arrivals[0][1], arrivals[-1][1]
    assert report_at >= 1.1
    assert first_progress < report_at - 0.6, arrivals


async def test_the_judge_replica_refuses_non_admin_runs(judge_evals, user: MeshUser) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await run_evaluation(judge_evals, user, session_id=new_session_id())
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
