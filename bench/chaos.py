"""`make chaos` (`python -m bench.chaos`): a bounded fault suite against a local mesh of its own
under steady chat load (loopback only, bounded loops and time).

The mesh runs in this process with meshctl's own supervisor (what `make run` runs), on
ephemeral ports, a temporary folder and its own embedded Postgres. CHAOS_CONCURRENCY clients
(default 4) chat through the gateway without pause; every turn states a new fact ("I like
...") so it owes the memory service a write and the evals service a trace. Faults, in turn:

- `kill:<service>`   SIGKILL of auth, sessions, memory, evals, agent, the gateway (the
                     supervisor restarts it);
- `stop:<service>`   SIGSTOP for CHAOS_FREEZE_S, then SIGCONT;
- `postgres:freeze`  SIGSTOP of the postmaster and its children for CHAOS_FREEZE_S;
- `postgres:restart` `pg_ctl restart -m fast`: every connection dropped;
- `llm:429|500|stall` the offline LLM answers 429 / 500 / stalls (its /_offline/faults) for
                     CHAOS_FREEZE_S;
- `down:memory|evals` the service stopped and kept down for CHAOS_OUTAGE_S (default 60), then
                     left to the supervisor to start again.

Per fault it reports: turns failed; turns that succeeded but lost their memory write or trace
(checked in the database, per succeeded run, once the agent's outbox has delivered what the
fault held up, with the load paused meanwhile, within CHAOS_DRAIN_TIMEOUT_S; must be 0); time to
recover (fault removed -> every service's health SERVING, /readyz 200, a new client's chat turn
and every load client's turn answered again); the supervisor's restarts; and whether any process
had to be restarted by hand (a process that does not recover within CHAOS_RECOVERY_TIMEOUT_S is
restarted by the suite and reported; must be never). Results: bench/results/chaos-latest.json (a
quick or partial run writes chaos-partial-latest.json) and a Markdown table on stdout (the
README's "Chaos" section). Exit status 1 when a fault lost a hand-off, needed a manual restart
or did not recover.

CHAOS_QUICK=1 is a CI-sized run (5 s freezes, 10 s outages unless CHAOS_OUTAGE_S is set, two
clients); CHAOS_FAULTS=kill:agent,postgres:freeze runs only those; CHAOS_KEEP_LOGS=1 keeps the
processes' logs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from bench.chaos_checks import Checks
from bench.chaos_load import Load
from bench.chaos_mesh import CHAOS_ENV, SupervisedMesh, chaos_log, chaos_mesh
from bench.postgres_faults import postgres_frozen, restart_postgres
from bench.results import RESULTS_DIR, cpu_model, git_commit
from meshctl.mesh import Mesh

PROCESS_FAULT_TARGETS = ("auth", "sessions", "memory", "evals", "agent", "gateway")
ALL_FAULTS = (
    *(f"kill:{name}" for name in PROCESS_FAULT_TARGETS),
    *(f"stop:{name}" for name in PROCESS_FAULT_TARGETS),
    "postgres:freeze",
    "postgres:restart",
    "llm:429",
    "llm:500",
    "llm:stall",
    "down:memory",
    "down:evals",
)


@dataclass(frozen=True)
class Plan:
    quick: bool
    faults: tuple[str, ...]
    outage_s: float
    freeze_s: float
    settle_s: float
    concurrency: int
    recovery_timeout_s: float
    drain_timeout_s: float

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Plan:
        # An empty variable (what `make chaos` passes when none is given) means the default.
        env = {key: value for key, value in (os.environ if environ is None else environ).items() if value}
        quick = env.get("CHAOS_QUICK", "") not in ("", "0")
        wanted = tuple(name.strip() for name in env.get("CHAOS_FAULTS", "").split(",") if name.strip())
        unknown = [name for name in wanted if name not in ALL_FAULTS]
        if unknown:
            raise SystemExit(f"unknown CHAOS_FAULTS {', '.join(unknown)}; known: {', '.join(ALL_FAULTS)}")
        outage_default = "10" if quick else "60"
        return cls(
            quick=quick,
            faults=wanted or ALL_FAULTS,
            outage_s=float(env.get("CHAOS_OUTAGE_S", outage_default)),
            freeze_s=float(env.get("CHAOS_FREEZE_S", "5" if quick else "20")),
            settle_s=float(env.get("CHAOS_SETTLE_S", "2" if quick else "5")),
            concurrency=int(env.get("CHAOS_CONCURRENCY", "2" if quick else "4")),
            recovery_timeout_s=float(env.get("CHAOS_RECOVERY_TIMEOUT_S", "90")),
            drain_timeout_s=float(env.get("CHAOS_DRAIN_TIMEOUT_S", "300")),
        )


async def _llm_fault(mesh: Mesh, kind: str | None) -> None:
    base = mesh.llm_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        if kind is None:
            (await client.post("/_offline/reset")).raise_for_status()
        else:
            spec = {"model": "*", "kind": kind, "count": -1, "stall_s": 60, "retry_after": 1}
            (await client.post("/_offline/faults", json=spec)).raise_for_status()


async def inject(supervised: SupervisedMesh, fault: str, plan: Plan) -> None:
    """Applies the fault and returns once its cause is removed (the recovery clock starts then)."""
    kind, _, target = fault.partition(":")
    if kind == "kill":
        supervised.signal(target, signal.SIGKILL)
    elif kind == "stop":
        supervised.signal(target, signal.SIGSTOP)
        try:
            await asyncio.sleep(plan.freeze_s)
        finally:
            supervised.signal(target, signal.SIGCONT)
    elif fault == "postgres:freeze":
        with postgres_frozen(supervised.pgdata):
            await asyncio.sleep(plan.freeze_s)
    elif fault == "postgres:restart":
        await asyncio.to_thread(restart_postgres, supervised.pgdata)
    elif kind == "llm":
        await _llm_fault(supervised.mesh, target)
        try:
            await asyncio.sleep(plan.freeze_s)
        finally:
            await _llm_fault(supervised.mesh, None)
    elif kind == "down":
        supervised.hold(target)
        try:
            await asyncio.sleep(plan.outage_s)
        finally:
            supervised.release(target)
    else:
        raise ValueError(f"unknown fault {fault}")


@dataclass
class FaultResult:
    fault: str
    duration_s: float
    turns_ok: int
    turns_failed: int
    answered_p95_s: float | None
    errors: dict[str, int]
    succeeded_runs_checked: int
    lost_memory_writes: int
    lost_traces: int
    dead_letters: int
    recover_s: float | None
    outbox_delivered_s: float
    supervisor_restarts: dict[str, int]
    manual_restarts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.recover_s is not None
            and not self.manual_restarts
            and self.lost_memory_writes == 0
            and self.lost_traces == 0
            and self.dead_letters == 0
        )


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2)


async def run_fault(supervised: SupervisedMesh, load: Load, checks: Checks, fault: str, plan: Plan) -> FaultResult:
    await asyncio.sleep(plan.settle_s)  # steady load before the fault
    since = await checks.db_now()
    restarts_before = supervised.restarts()
    manual_before = len(supervised.manual_restarts)
    started = time.monotonic()
    chaos_log(f"{fault}: injecting")
    await inject(supervised, fault, plan)
    removed = time.monotonic()
    recover_s = await checks.wait_recovered(plan.recovery_timeout_s)
    if recover_s is None:
        for name in supervised.not_ready() or [n for n in PROCESS_FAULT_TARGETS if fault.endswith(n)]:
            chaos_log(f"{fault}: {name} did not recover in {plan.recovery_timeout_s:g}s; restarting it by hand")
            supervised.restart_by_hand(name)
        await checks.wait_recovered(plan.recovery_timeout_s)
    recovered = time.monotonic()
    # The load pauses while the outbox catches up: under steady load the receivers' backlog
    # drains only as fast as they outpace new turns, which says nothing about loss.
    await load.pause()
    until = await checks.db_now()
    try:
        delivered_s, memory, traces, dead = await checks.wait_delivered(since, until, plan.drain_timeout_s)
    finally:
        load.resume()
    window = [t for t in load.turns if started <= t.ended <= recovered + 1.0]
    errors = Counter(t.error for t in window if not t.ok)
    restarts_after = supervised.restarts()
    result = FaultResult(
        fault=fault,
        duration_s=round(removed - started, 2),
        turns_ok=sum(t.ok for t in window),
        turns_failed=sum(not t.ok for t in window),
        answered_p95_s=_p95([t.ended - t.started for t in window if t.ok]),
        errors=dict(errors.most_common(4)),
        succeeded_runs_checked=await checks.succeeded_runs(since, until),
        lost_memory_writes=len(memory),
        lost_traces=len(traces),
        dead_letters=dead,
        recover_s=None if recover_s is None else round(recover_s, 2),
        outbox_delivered_s=round(delivered_s, 2),
        supervisor_restarts={
            name: count - restarts_before.get(name, 0)
            for name, count in restarts_after.items()
            if count != restarts_before.get(name, 0)
        },
        manual_restarts=supervised.manual_restarts[manual_before:],
    )
    chaos_log(
        f"{fault}: failed {result.turns_failed}/{result.turns_ok + result.turns_failed} turns, lost memory"
        f" {result.lost_memory_writes} traces {result.lost_traces}, recovered in {result.recover_s}s,"
        f" restarts {result.supervisor_restarts or '-'}, by hand {result.manual_restarts or 'never'}"
    )
    return result


async def run_suite(plan: Plan, env: dict[str, str] | None = None) -> dict[str, Any]:
    results: list[FaultResult] = []
    started = time.monotonic()
    with chaos_mesh(env) as supervised:
        chaos_log(f"mesh up: gateway {supervised.mesh.gateway_url}; faults {', '.join(plan.faults)}")
        load = Load(supervised.mesh, plan.concurrency)
        checks = Checks(supervised, load)
        await load.start()
        try:
            for fault in plan.faults:
                results.append(await run_fault(supervised, load, checks, fault, plan))
        finally:
            await load.stop()
            await load.close()
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "quick": plan.quick,
        "plan": asdict(plan),
        "mesh_env": {key: CHAOS_ENV[key] for key in sorted(CHAOS_ENV)},
        "duration_s": round(time.monotonic() - started, 1),
        "turns_total": len(load.turns),
        "turns_failed_total": sum(not t.ok for t in load.turns),
        "ok": all(result.ok for result in results),
        "faults": [{**asdict(result), "ok": result.ok} for result in results],
    }


def markdown_table(document: dict[str, Any]) -> str:
    lines = [
        "| fault | turns failed / total | answered p95 | lost memory writes | lost traces | recovered in"
        " | outbox caught up | supervisor restarts | restarted by hand |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for item in document["faults"]:
        total = item["turns_ok"] + item["turns_failed"]
        recover = "not recovered" if item["recover_s"] is None else f"{item['recover_s']:.1f} s"
        restarts = ", ".join(f"{name} {count}" for name, count in item["supervisor_restarts"].items()) or "-"
        lost_memory = item["lost_memory_writes"] + item["dead_letters"]
        p95 = "-" if item.get("answered_p95_s") is None else f"{item['answered_p95_s']:.1f} s"
        lines.append(
            f"| {item['fault']} | {item['turns_failed']} / {total} | {p95} | {lost_memory} | {item['lost_traces']}"
            f" | {recover} | {item['outbox_delivered_s']:.0f} s | {restarts}"
            f" | {', '.join(item['manual_restarts']) or 'never'} |"
        )
    return "\n".join(lines)


def main() -> int:
    plan = Plan.from_env()
    document = asyncio.run(run_suite(plan))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    # Only the whole suite at full length is "the" result; a quick or partial run goes beside it.
    full = not plan.quick and plan.faults == ALL_FAULTS
    name = "chaos-latest.json" if full else "chaos-partial-latest.json"
    (RESULTS_DIR / name).write_text(json.dumps(document, indent=2) + "\n")
    print(markdown_table(document))
    print(
        f"\nchaos: {len(document['faults'])} faults in {document['duration_s']:.0f}s,"
        f" {document['turns_total']} turns ({document['turns_failed_total']} failed);"
        f" {'all recovered, nothing lost, no manual restart' if document['ok'] else 'PROBLEMS: see above'}"
    )
    return 0 if document["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
