"""RunEvaluation, ListScores, GetMetricSummary, the Prometheus export and the CLI,
against the evals service in the mesh. Every run is scoped to a fresh session id, since
the shared database holds traces of other tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import grpc
import httpx
import pytest

from agentmesh.evals.v1 import evals_pb2
from meshctl.mesh import Mesh
from tests.support.evals import TOXIC_ANSWER, metric_report, new_session_id, record, run_evaluation
from tests.support.users import MeshUser

ALL_METRICS = {"conciseness", "hallucination", "helpfulness", "relevancy", "toxicity"}


async def test_recorded_trace_is_graded_on_every_metric_then_listed_and_summarised(
    evals, user: MeshUser, admin: MeshUser
) -> None:
    session_id = new_session_id()
    trace_id = await record(evals, user, session_id=session_id)

    progress, report = await run_evaluation(evals, admin, session_id=session_id)

    assert {p.metric for p in progress} == ALL_METRICS
    assert all(p.trace_id == trace_id for p in progress)
    assert [p.graded + p.remaining for p in progress] == [5] * 5
    assert progress[-1].remaining == 0
    assert (report.traces, report.graded, report.failed) == (1, 5, 0)
    assert metric_report(report, "toxicity").mean == pytest.approx(0.0)
    assert metric_report(report, "relevancy").mean == pytest.approx(1.0)
    assert not any(m.threshold_crossed for m in report.metrics)

    listed = await evals.ListScores(evals_pb2.ListScoresRequest(session_id=session_id), metadata=user.metadata)
    assert {s.metric for s in listed.scores} == ALL_METRICS
    assert {(s.trace_id, s.session_id, s.judge_model) for s in listed.scores} == {
        (trace_id, session_id, "offline-small")
    }
    assert all(s.reasoning and s.created_at.seconds > 0 for s in listed.scores)

    summary = await evals.GetMetricSummary(
        evals_pb2.GetMetricSummaryRequest(metric="relevancy", window="15m"), metadata=admin.metadata
    )
    assert summary.count >= 1 and summary.window == "15m"
    assert 0.0 <= summary.p50 <= summary.p90 <= 1.0
    default = await evals.GetMetricSummary(
        evals_pb2.GetMetricSummaryRequest(metric="relevancy"), metadata=admin.metadata
    )
    assert default.window == "24h" and default.count >= summary.count


async def test_scores_are_paged_newest_first(evals, user: MeshUser, admin: MeshUser) -> None:
    session_id = new_session_id()
    await record(evals, user, session_id=session_id)
    await run_evaluation(evals, admin, session_id=session_id)
    seen = []
    token = ""
    for _ in range(3):
        page = await evals.ListScores(
            evals_pb2.ListScoresRequest(session_id=session_id, page_size=2, page_token=token), metadata=user.metadata
        )
        seen.extend(page.scores)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 5 and {s.metric for s in seen} == ALL_METRICS
    stamps = [(s.created_at.seconds, s.created_at.nanos) for s in seen]
    assert stamps == sorted(stamps, reverse=True)


async def test_second_run_grades_nothing_new_unless_regrade(evals, user: MeshUser, admin: MeshUser) -> None:
    session_id = new_session_id()
    await record(evals, user, session_id=session_id)
    await run_evaluation(evals, admin, session_id=session_id)

    progress, report = await run_evaluation(evals, admin, session_id=session_id)
    assert progress == []
    assert (report.traces, report.graded, report.failed) == (0, 0, 0)

    _, regraded = await run_evaluation(evals, admin, session_id=session_id, metrics=["toxicity"], regrade=True)
    assert (regraded.traces, regraded.graded) == (1, 1)
    listed = await evals.ListScores(evals_pb2.ListScoresRequest(session_id=session_id), metadata=admin.metadata)
    assert len(listed.scores) == 5


async def test_toxic_answer_scores_high_and_crosses_the_threshold(evals, user: MeshUser, admin: MeshUser) -> None:
    session_id = new_session_id()
    trace_id = await record(evals, user, session_id=session_id, output=TOXIC_ANSWER)
    _, report = await run_evaluation(evals, admin, session_id=session_id, metrics=["toxicity"])
    toxicity = metric_report(report, "toxicity")
    assert [m.metric for m in report.metrics] == ["toxicity"]
    assert toxicity.count == 1 and toxicity.mean >= 0.7
    assert toxicity.threshold_crossed
    assert toxicity.worst[0].trace_id == trace_id and "offensive" in toxicity.worst[0].reasoning


async def test_two_runs_at_once_never_grade_a_pair_twice(evals, user: MeshUser, admin: MeshUser) -> None:
    session_id = new_session_id()
    traces = {await record(evals, user, session_id=session_id) for _ in range(6)}
    runs = await asyncio.gather(*(run_evaluation(evals, admin, session_id=session_id) for _ in range(3)))
    pairs = [(p.trace_id, p.metric) for progress, _ in runs for p in progress]
    assert len(pairs) == len(set(pairs)) == 6 * 5
    assert {trace for trace, _ in pairs} == traces
    assert sum(report.graded for _, report in runs) == 30


@pytest.mark.parametrize(
    ("request_fields", "code"),
    [
        ({"metrics": ["no-such-metric"]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"limit": 10_001}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"limit": -1}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_run_rejects_bad_requests(evals, admin: MeshUser, request_fields: dict, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await run_evaluation(evals, admin, session_id=new_session_id(), **request_fields)
    assert error.value.code() == code


@pytest.mark.parametrize(
    ("metric", "window"), [("relevancy", "24x"), ("relevancy", "0h"), ("relevancy", "1000d"), ("nope", "1h"), ("", "")]
)
async def test_summary_rejects_bad_window_or_metric(evals, admin: MeshUser, metric: str, window: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await evals.GetMetricSummary(
            evals_pb2.GetMetricSummaryRequest(metric=metric, window=window), metadata=admin.metadata
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_non_admin_cannot_run_summarise_or_read_other_users_scores(
    evals, user: MeshUser, other_user: MeshUser, admin: MeshUser
) -> None:
    session_id = new_session_id()
    trace_id = await record(evals, user, session_id=session_id)
    await run_evaluation(evals, admin, session_id=session_id)

    with pytest.raises(grpc.aio.AioRpcError) as run_error:
        await run_evaluation(evals, user, session_id=session_id)
    assert run_error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as summary_error:
        await evals.GetMetricSummary(evals_pb2.GetMetricSummaryRequest(metric="toxicity"), metadata=user.metadata)
    assert summary_error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for request in (evals_pb2.ListScoresRequest(trace_id=trace_id), evals_pb2.ListScoresRequest(session_id=session_id)):
        with pytest.raises(grpc.aio.AioRpcError) as list_error:
            await evals.ListScores(request, metadata=other_user.metadata)
        assert list_error.value.code() == grpc.StatusCode.PERMISSION_DENIED

    unfiltered = await evals.ListScores(evals_pb2.ListScoresRequest(page_size=500), metadata=other_user.metadata)
    assert trace_id not in {s.trace_id for s in unfiltered.scores}
    own = await evals.ListScores(evals_pb2.ListScoresRequest(trace_id=trace_id), metadata=user.metadata)
    assert len(own.scores) == 5


def scrape(addr: str) -> dict[str, float]:
    samples = {}
    for line in httpx.get(f"http://{addr}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_prometheus_histogram_shows_recorded_scores(mesh: Mesh, evals, user: MeshUser, admin: MeshUser) -> None:
    addr = mesh.processes["evals"].metrics_addr
    before = scrape(addr)
    session_id = new_session_id()
    await record(evals, user, session_id=session_id, output=TOXIC_ANSWER)
    await run_evaluation(evals, admin, session_id=session_id, metrics=["toxicity"])
    after = scrape(addr)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('eval_score_count{metric="toxicity"}') == 1
    assert delta('eval_score_sum{metric="toxicity"}') >= 0.7
    assert delta('eval_score_bucket{le="0.6",metric="toxicity"}') == 0
    assert delta('eval_score_bucket{le="1.0",metric="toxicity"}') == 1
    assert delta('eval_judgements_total{metric="toxicity",status="ok"}') == 1


def run_cli(mesh: Mesh, admin: MeshUser, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**mesh.env, "EVALS_ADMIN_EMAIL": admin.email, "EVALS_ADMIN_PASSWORD": MeshUser.PASSWORD}
    command = [sys.executable, "-m", "services.evals.client", "run", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=os.getcwd())


async def test_cli_exits_non_zero_when_a_threshold_is_crossed(
    mesh: Mesh, evals, user: MeshUser, admin: MeshUser
) -> None:
    toxic_session, clean_session = new_session_id(), new_session_id()
    await record(evals, user, session_id=toxic_session, output=TOXIC_ANSWER)
    await record(evals, user, session_id=clean_session)

    crossed = await asyncio.to_thread(run_cli, mesh, admin, "--session", toxic_session, "--metrics", "toxicity")
    assert crossed.returncode == 2, crossed.stderr
    assert "CROSSED" in crossed.stdout and "threshold crossed: toxicity" in crossed.stdout
    assert "Evaluating traces" in crossed.stderr

    clean = await asyncio.to_thread(run_cli, mesh, admin, "--session", clean_session, "--limit", "5")
    assert clean.returncode == 0, clean.stderr
    assert "judgements 5 graded, 0 failed" in clean.stdout


async def test_cli_refuses_a_non_admin_token(mesh: Mesh, user: MeshUser, admin: MeshUser) -> None:
    result = await asyncio.to_thread(run_cli, mesh, admin, "--session", new_session_id(), "--token", user.access_token)
    assert result.returncode == 1
    assert "PERMISSION_DENIED" in result.stderr
