"""Evaluation throughput: traces graded per second with the offline judge at judge
concurrency 1, 8 and 32, and the run's overhead over the judge's own latency.

`python -m bench.evals_grading` starts a small mesh (auth, evals, the offline LLM), records
TRACES traces per level in a fresh session, runs RunEvaluation on them through an evals
instance started with that JUDGE_CONCURRENCY, and compares the time per judgement at
concurrency 1 with the judge's own latency measured directly in the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import httpx

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ROOT
from runtime.service_identity import dev_service_credential

TRACES = int(os.environ.get("EVALS_BENCH_TRACES", "100"))
LEVELS = (1, 8, 32)
ADMIN = "bench-admin@example.com"
PASSWORD = "Bench-admin-1!"


async def judge_latency_ms(llm_url: str, samples: int = 50) -> float:
    """The offline judge's own latency for one judgement, called directly."""
    body = {
        "model": "offline-small",
        "messages": [
            {"role": "system", "content": "Grade relevancy from 0 to 1."},
            {"role": "user", "content": json.dumps({"metric": "relevancy", "input": "What is 2+2?", "output": "4"})},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "judgement",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"score": {"type": "number"}, "reasoning": {"type": "string"}},
                    "required": ["score", "reasoning"],
                    "additionalProperties": False,
                },
            },
        },
    }
    timings = []
    async with httpx.AsyncClient(base_url=llm_url, timeout=30) as client:
        for _ in range(samples):
            started = time.perf_counter()
            (await client.post("/chat/completions", json=body)).raise_for_status()
            timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


async def grade_level(mesh: Mesh, token: str, recorder: tuple[str, str], concurrency: int) -> dict[str, float]:
    """`recorder`: the agent's service token and the user its traces name (RecordTrace is service-only)."""
    child = mesh.start_service(
        "evals",
        instance=f"-c{concurrency}",
        JUDGE_CONCURRENCY=str(concurrency),
        DB_POOL_SIZE="20",
        DB_MAX_OVERFLOW="20",
    )
    metadata = (("authorization", f"Bearer {token}"),)
    service_token, user_id = recorder
    as_agent = (("authorization", f"Bearer {service_token}"),)
    try:
        async with grpc.aio.insecure_channel(child.addr) as channel:
            stub = evals_pb2_grpc.EvalServiceStub(channel)
            session = str(uuid.uuid4())
            for index in range(TRACES):
                trace = evals_pb2.Trace(
                    trace_id=str(uuid.uuid4()),
                    session_id=session,
                    user_id=user_id,
                    input=f"What is the capital of country number {index}?",
                    output=f"You asked about the capital of country number {index}; I am the agentmesh offline model.",
                )
                await stub.RecordTrace(evals_pb2.RecordTraceRequest(trace=trace), metadata=as_agent)
            started = time.perf_counter()
            report = None
            async for event in stub.RunEvaluation(
                evals_pb2.RunEvaluationRequest(session_id=session, limit=TRACES), metadata=metadata
            ):
                if event.HasField("report"):
                    report = event.report
            elapsed = time.perf_counter() - started
    finally:
        child.stop()
        mesh.processes.pop(f"evals-c{concurrency}", None)
    assert report is not None and report.failed == 0, report
    return {
        "traces": report.traces,
        "judgements": report.graded,
        "seconds": round(elapsed, 3),
        "traces_per_s": round(report.traces / elapsed, 2),
        "judgements_per_s": round(report.graded / elapsed, 2),
        "ms_per_judgement": round(elapsed * 1000 / report.graded, 3),
    }


async def measure(mesh: Mesh) -> dict[str, object]:
    async with grpc.aio.insecure_channel(mesh.addr("auth")) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        registered = await auth.Register(auth_pb2.RegisterRequest(email=ADMIN, password=PASSWORD))
        # Registration grants no role: the operator command makes the admin.
        grant = ["-m", "services.auth", "grant-role", "--email", ADMIN, "--role", "admin"]
        await asyncio.to_thread(
            subprocess.run, [sys.executable, *grant], cwd=ROOT, env=mesh.env, check=True, stdout=subprocess.DEVNULL
        )
        token = (await auth.Login(auth_pb2.LoginRequest(email=ADMIN, password=PASSWORD))).access_token
        issued = await auth.IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest(service_name="agent", credential=dev_service_credential("agent"))
        )
    recorder = (issued.access_token, registered.user.id)
    judge_ms = await judge_latency_ms(mesh.llm_url)
    levels = {str(level): await grade_level(mesh, token, recorder, level) for level in LEVELS}
    sequential = levels["1"]["ms_per_judgement"]
    return {
        "judge_latency_ms_p50": round(judge_ms, 3),
        "levels": levels,
        "overhead_ms_per_judgement_c1": round(sequential - judge_ms, 3),
        "overhead_ratio_c1": round(sequential / judge_ms, 2),
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agentmesh-evals-bench-") as tmp:
        mesh = Mesh(
            data_dir=Path(tmp) / "data",
            log_dir=Path(tmp) / "logs",
            ephemeral_ports=True,
            extra_env={"APP_ENV": "test", "BCRYPT_ROUNDS": "4", "LOG_LEVEL": "WARNING"},
        )
        try:
            mesh.start(["auth"])
            result = asyncio.run(measure(mesh))
        finally:
            mesh.stop()
    out = Path(__file__).parent / "results" / "evals-latest.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"judge alone: {result['judge_latency_ms_p50']} ms per judgement (p50)")
    for level, figures in result["levels"].items():  # type: ignore[union-attr]
        rates = f"{figures['traces_per_s']:>6} traces/s, {figures['judgements_per_s']:>7} judgements/s"
        print(f"concurrency {level:>2}: {rates}, {figures['ms_per_judgement']} ms per judgement")
    print(f"run overhead at concurrency 1: {result['overhead_ms_per_judgement_c1']} ms per judgement ({out})")


if __name__ == "__main__":
    main()
