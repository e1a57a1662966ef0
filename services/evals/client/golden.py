"""The golden gate: fixed prompts through the real agent, graded by the judge, checked
against per-prompt expectations and every metric's threshold. A prompt or model change
that makes the agent worse on them fails here before it reaches users.

Each line of the dataset is `{"id", "prompt", "expect_contains": [...],
"metrics_max": {metric: max}, "metrics_min": {metric: min}}`. A fresh user chats, one
session per prompt, and RunEvaluation scoped to that session grades the trace the agent
itself recorded for the turn (services/agent/executor.py `trace_of`, delivered through its
outbox), as an admin: the gate grades what production grades, tool results and decisions
included, and needs no service credential to record a rebuilt copy.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from runtime.settings import load_settings
from services.evals.client.evaluation import EXIT_OK, EXIT_THRESHOLD_CROSSED, evaluate
from services.evals.client.login import CommandError, admin_token, bearer
from services.evals.settings import EvalsSettings

# The agent being down is not a quality regression: stop with an error instead.
FATAL_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
# How often to look for the agent's trace of a turn while its outbox delivers it.
TRACE_POLL_S = 0.2


class GoldenCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100)
    prompt: str = Field(min_length=1, max_length=3000)
    expect_contains: list[str] = Field(default_factory=list)
    metrics_max: dict[str, float] = Field(default_factory=dict)
    metrics_min: dict[str, float] = Field(default_factory=dict)


@dataclass
class CaseResult:
    case: GoldenCase
    answer: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def load_dataset(path: Path) -> list[GoldenCase]:
    if not path.is_file():
        raise CommandError(f"golden dataset {path} not found")
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            cases.append(GoldenCase.model_validate_json(line))
        except ValidationError as exc:
            raise CommandError(f"{path}:{number}: {exc.errors()[0]['msg']}") from None
    if not cases:
        raise CommandError(f"golden dataset {path} is empty")
    return cases


def check_case(result: CaseResult) -> None:
    case = result.case
    for expected in case.expect_contains:
        if expected.lower() not in result.answer.lower():
            result.problems.append(f"answer lacks {expected!r}")
    for bounds, worse in ((case.metrics_max, "above"), (case.metrics_min, "below")):
        for metric, bound in bounds.items():
            score = result.scores.get(metric)
            if score is None:
                result.problems.append(f"{metric} not graded")
            elif (score > bound) if worse == "above" else (score < bound):
                result.problems.append(f"{metric} {score:.2f} {worse} {bound:.2f}")


def golden_table(results: list[CaseResult], means: dict[str, float], crossed: list[str]) -> str:
    metrics = sorted(means)
    lines = [f"{'case':<24} {'result':<6} " + " ".join(f"{m[:12]:>12}" for m in metrics) + "  problems"]
    for r in results:
        cells = " ".join(f"{r.scores[m]:>12.2f}" if m in r.scores else f"{'-':>12}" for m in metrics)
        lines.append(f"{r.case.id[:24]:<24} {'FAIL' if r.problems else 'pass':<6} {cells}  {'; '.join(r.problems)}")
    lines.append(f"{'mean':<24} {'':<6} " + " ".join(f"{means[m]:>12.3f}" for m in metrics))
    failed = sum(1 for r in results if r.problems)
    lines.append(
        f"{len(results) - failed}/{len(results)} cases pass; thresholds crossed: {', '.join(crossed) or 'none'}"
    )
    return "\n".join(lines)


class GoldenRun:
    def __init__(self, settings: EvalsSettings, admin: str) -> None:
        self._settings = settings
        self._admin = admin
        self._timeout = settings.evals_call_timeout_s

    async def register_user(self) -> str:
        # A throwaway user keeps the golden traces apart from anyone's real sessions.
        email = f"golden-{uuid.uuid4().hex[:12]}@{self._settings.evals_golden_email_domain}"
        password = f"G0lden!{secrets.token_urlsafe(16)}"
        async with grpc.aio.insecure_channel(self._settings.auth_addr) as channel:
            response = await auth_pb2_grpc.AuthServiceStub(channel).Register(
                auth_pb2.RegisterRequest(email=email, password=password), timeout=self._timeout
            )
        return response.tokens.access_token

    async def chat(self, user: str, case: GoldenCase) -> tuple[str, str]:
        """Runs one prompt in a new session; returns (session, answer)."""
        s = self._settings
        async with (
            grpc.aio.insecure_channel(s.sessions_addr) as sessions_channel,
            grpc.aio.insecure_channel(s.agent_addr) as agent_channel,
        ):
            session = await sessions_pb2_grpc.SessionServiceStub(sessions_channel).CreateSession(
                sessions_pb2.CreateSessionRequest(name=f"golden {case.id}"[:100]),
                metadata=bearer(user),
                timeout=self._timeout,
            )
            session_id = session.session.session_id
            reply = await agent_pb2_grpc.AgentServiceStub(agent_channel).Chat(
                agent_pb2.ChatRequest(
                    session_id=session_id, message=agent_pb2.Message(role="user", content=case.prompt)
                ),
                metadata=bearer(user),
                timeout=s.llm_timeout_s * 4,
            )
        answer = next((m.content for m in reversed(reply.messages) if m.role == "assistant"), "")
        return session_id, answer

    async def grade(self, session_id: str) -> evals_pb2.EvaluationReport:
        """The session's trace graded, once the agent's outbox has delivered it."""
        deadline = time.monotonic() + self._timeout
        request = evals_pb2.RunEvaluationRequest(session_id=session_id)
        while True:
            report, _ = await evaluate(self._settings, self._admin, request, progress_bar=False)
            if report.traces or time.monotonic() > deadline:
                break
            await asyncio.sleep(TRACE_POLL_S)
        if not report.traces:
            raise CommandError(
                f"the agent recorded no trace of session {session_id} within {self._timeout:g}s "
                "(is EVALS_ENABLED off on the agent, or its outbox stuck?)"
            )
        return report

    async def run_case(self, user: str, case: GoldenCase) -> CaseResult:
        result = CaseResult(case)
        try:
            session_id, result.answer = await self.chat(user, case)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in FATAL_CODES:
                raise
            result.problems.append(f"chat failed: {exc.code().name}: {exc.details()}")
            return result
        report = await self.grade(session_id)
        for row in report.metrics:
            if row.count:
                result.scores[row.metric] = row.mean
            elif row.failed:
                result.problems.append(f"{row.metric} judgement failed")
        return result


async def golden_command(args: argparse.Namespace) -> int:
    settings = load_settings(EvalsSettings)
    cases = load_dataset(args.dataset or settings.evals_golden_dataset)
    admin = await admin_token(settings, args.token)
    async with grpc.aio.insecure_channel(settings.evals_addr) as channel:
        listed = await evals_pb2_grpc.EvalServiceStub(channel).ListMetrics(
            evals_pb2.ListMetricsRequest(), metadata=bearer(admin), timeout=settings.evals_call_timeout_s
        )
    metrics = {m.name: m for m in listed.metrics}
    unknown = {name for case in cases for name in [*case.metrics_max, *case.metrics_min]} - set(metrics)
    if unknown:
        raise CommandError(f"the dataset names unknown metrics: {', '.join(sorted(unknown))}")
    run = GoldenRun(settings, admin)
    user = await run.register_user()
    results = []
    for case in tqdm(cases, desc="Golden prompts", unit="prompt"):
        result = await run.run_case(user, case)
        check_case(result)
        results.append(result)
    means = {
        name: sum(r.scores[name] for r in results if name in r.scores) / graded
        for name in metrics
        if (graded := sum(1 for r in results if name in r.scores))
    }
    crossed = [name for name, mean in means.items() if threshold_crossed(metrics[name], mean)]
    print(golden_table(results, means, crossed))
    return EXIT_THRESHOLD_CROSSED if crossed or any(r.problems for r in results) else EXIT_OK


def threshold_crossed(metric: evals_pb2.Metric, mean: float) -> bool:
    if metric.direction == evals_pb2.Metric.DIRECTION_LOWER_IS_BETTER:
        return mean > metric.threshold
    return mean < metric.threshold
