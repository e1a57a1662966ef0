"""The evals command line, the seed's `python -m evals.main` grown up:

    python -m services.evals.client run [--metrics a,b] [--since ISO] [--limit N] [--session ID] [--regrade]
        [--token T]
    python -m services.evals.client golden [--dataset PATH] [--token T]

`run` and `golden` exit 0 when every metric is on the right side of its threshold, 2 when
one crosses it (a quality regression), 1 when the run itself could not be done.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from pathlib import Path

import grpc

from agentmesh.evals.v1 import evals_pb2
from runtime.settings import load_settings
from services.evals.client.evaluation import EXIT_ERROR, EXIT_OK, EXIT_THRESHOLD_CROSSED, evaluate
from services.evals.client.golden import golden_command
from services.evals.client.login import CommandError, admin_token
from services.evals.settings import EvalsSettings

DIRECTION_WORDS = {
    evals_pb2.Metric.DIRECTION_LOWER_IS_BETTER: "<=",
    evals_pb2.Metric.DIRECTION_HIGHER_IS_BETTER: ">=",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.evals.client", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="grade ungraded traces and print a summary")
    run.add_argument("--metrics", default="", help="comma-separated metric names (default: all)")
    run.add_argument("--since", type=datetime.fromisoformat, help="only traces recorded at or after (ISO 8601)")
    run.add_argument("--limit", type=int, default=0, help="at most this many traces (default 100)")
    run.add_argument("--session", default="", help="only traces of this session")
    run.add_argument("--regrade", action="store_true", help="grade again pairs that already have a score")
    run.add_argument("--token", default=None, help="admin access token (default: log in with EVALS_ADMIN_*)")
    golden = commands.add_parser("golden", help="run the golden dataset through the agent and gate on quality")
    golden.add_argument("--dataset", type=Path, default=None, help="JSONL file (default EVALS_GOLDEN_DATASET)")
    golden.add_argument("--token", default=None, help="admin access token (default: log in with EVALS_ADMIN_*)")
    return parser.parse_args(argv)


def run_request(args: argparse.Namespace) -> evals_pb2.RunEvaluationRequest:
    request = evals_pb2.RunEvaluationRequest(
        metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
        limit=args.limit,
        session_id=args.session,
        regrade=args.regrade,
    )
    if args.since is not None:
        since = args.since if args.since.tzinfo else args.since.astimezone()
        request.since.FromDatetime(since)
    return request


def summary_table(report: evals_pb2.EvaluationReport, metrics: dict[str, evals_pb2.Metric]) -> str:
    lines = [
        f"traces {report.traces}, judgements {report.graded} graded, {report.failed} failed",
        f"{'metric':<16} {'graded':>6} {'failed':>6} {'mean':>6}  {'target':<7} {'status':<8} worst",
    ]
    for row in report.metrics:
        metric = metrics.get(row.metric)
        target = f"{DIRECTION_WORDS.get(metric.direction, '?')}{metric.threshold:.2f}" if metric else "?"
        status = "CROSSED" if row.threshold_crossed else ("-" if row.count == 0 else "ok")
        worst = ", ".join(f"{w.trace_id}={w.score:.2f}" for w in row.worst)
        mean = f"{row.mean:.3f}" if row.count else "-"
        lines.append(f"{row.metric:<16} {row.count:>6} {row.failed:>6} {mean:>6}  {target:<7} {status:<8} {worst}")
    return "\n".join(lines)


async def run_command(args: argparse.Namespace) -> int:
    settings = load_settings(EvalsSettings)
    token = await admin_token(settings, args.token)
    report, metrics = await evaluate(settings, token, run_request(args))
    print(summary_table(report, metrics))
    crossed = [m.metric for m in report.metrics if m.threshold_crossed]
    if crossed:
        print(f"threshold crossed: {', '.join(crossed)}")
        return EXIT_THRESHOLD_CROSSED
    return EXIT_OK


def guarded(command) -> int:
    try:
        return asyncio.run(command)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.command == "golden":
        return guarded(golden_command(args))
    return guarded(run_command(args))
