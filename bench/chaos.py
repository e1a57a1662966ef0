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
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from bench.mesh_run import BENCH_ENV
from bench.results import RESULTS_DIR, cpu_model, git_commit
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from meshctl.supervisor import Supervisor

GRPC_SERVICES = {
    "auth": "agentmesh.auth.v1.AuthService",
    "sessions": "agentmesh.sessions.v1.SessionService",
    "memory": "agentmesh.memory.v1.MemoryService",
    "evals": "agentmesh.evals.v1.EvalService",
    "agent": "agentmesh.agent.v1.AgentService",
}
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
# The chaos mesh: the benchmark settings, a model with some pace (turns overlap faults), tokens
# that outlive the suite, and hand-off retries capped at 10 s so a drained outbox is seen soon
# after a receiver returns (the default cap, 300 s, is for production fleets).
CHAOS_ENV = {
    **BENCH_ENV,
    "OFFLINE_LLM_TTFT_MS": "50",
    "OFFLINE_LLM_TOKENS_PER_S": "400",
    "ACCESS_TOKEN_TTL_S": "7200",
    "HANDOFF_MAX_BACKOFF_S": "10",
    "LLM_TIMEOUT_S": "10",
    "LOG_LEVEL": "INFO",
    # Recall only exact repeats: a fact the model was shown is not stored again, so with recall
    # on, a turn's new fact could be dropped as a near-repeat and leave no idempotency key to
    # check. Memory is still searched every turn; what is checked is that every write arrived.
    "MEMORY_MIN_SCORE": "1",
}
# Never someone else's database or model: the suite freezes and restarts its own.
ISOLATION_ENV = {"DATABASE_URL": "", "LLM_BASE_URL": "", "OPENAI_API_KEY": ""}
TURN_TIMEOUT_S = 60.0
SESSION_TURNS = 10
FAILED_TURN_PAUSE_S = 1.0
TICK_S = 0.2


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


def _log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- Postgres faults ---------------------------------------------------------------------


def _parent_pid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def postgres_pids(pgdata: Path) -> list[int]:
    """The postmaster of `pgdata` (from its postmaster.pid) and every process it forked
    (backends, checkpointer, io workers): what a frozen database server is."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = [
        int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _parent_pid(int(entry)) == postmaster
    ]
    return [postmaster, *children]


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a backend that ended meanwhile
            os.kill(pid, sig)


@contextmanager
def postgres_frozen(pgdata: Path) -> Iterator[list[int]]:
    """SIGSTOP on the server and its children for the block, SIGCONT after, whatever happens.
    Backends forked while frozen cannot exist (the postmaster forks them), so one list does."""
    pids = postgres_pids(pgdata)
    _signal_all(pids, signal.SIGSTOP)
    try:
        yield pids
    finally:
        _signal_all(pids, signal.SIGCONT)


def restart_postgres(pgdata: Path) -> float:
    """`pg_ctl restart -m fast` (every connection dropped); returns the seconds it took."""
    from pgserver._commands import pg_ctl

    started = time.monotonic()
    user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs it as this user under root
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=user)
    return time.monotonic() - started


# ---- the supervised mesh -------------------------------------------------------------------


class SupervisedMesh:
    """A Mesh whose processes meshctl's Supervisor watches from a thread (as `make run` does).
    `hold()` takes a process out of its watch (a service kept down); `release()` hands it back
    dead, so the supervisor itself starts it again."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.lock = threading.Lock()
        self.reports: list[str] = []
        self.supervisor = Supervisor(mesh.processes, self._report)
        self.held: dict[str, ChildProcess] = {}
        self.manual_restarts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="chaos-supervisor", daemon=True)

    def _report(self, line: str) -> None:
        self.reports.append(line)
        _log(f"supervisor: {line}")

    def _watch(self) -> None:
        while not self._stop.wait(TICK_S):
            with self.lock:
                self.supervisor.tick()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def pgdata(self) -> Path:
        return (self.mesh.data_dir / "pgdata").resolve()

    def pid(self, name: str) -> int:
        with self.lock:
            return self.mesh.processes[name].pid

    def restarts(self) -> dict[str, int]:
        with self.lock:
            return {name: state.restarts for name, state in self.supervisor.states.items()}

    def signal(self, name: str, sig: signal.Signals) -> None:
        with self.lock:
            self.mesh.processes[name].signal(sig)

    def hold(self, name: str) -> None:
        with self.lock:
            child = self.mesh.processes.pop(name)
            self.held[name] = child
        child.kill()

    def release(self, name: str) -> None:
        with self.lock:
            self.mesh.processes[name] = self.held.pop(name)

    def not_ready(self) -> list[str]:
        with self.lock:
            return [name for name, child in self.mesh.processes.items() if not (child.running() and child.ready)]

    def restart_by_hand(self, name: str) -> None:
        """What an operator would do with a process that did not come back: counted, never expected."""
        self.manual_restarts.append(name)
        with self.lock:
            child = self.mesh.processes[name]
            child.signal(signal.SIGCONT)
            child.kill()
            child.spawn()


@contextmanager
def chaos_mesh(env: dict[str, str] | None = None) -> Iterator[SupervisedMesh]:
    """A supervised mesh with its own embedded Postgres in a temporary folder, removed on exit."""
    from meshctl.postgres import stop_embedded_postgres

    base = Path(tempfile.mkdtemp(prefix="agentmesh-chaos-"))
    extra_env = {**CHAOS_ENV, **ISOLATION_ENV, **(env or {})}
    mesh = Mesh(base / "data", base / "logs", ephemeral_ports=True, extra_env=extra_env)
    supervised = SupervisedMesh(mesh)
    try:
        mesh.start()
        supervised.start()
        yield supervised
    finally:
        supervised.close()
        for child in supervised.held.values():
            child.kill()
        with contextlib.suppress(Exception):
            _signal_all(postgres_pids(supervised.pgdata), signal.SIGCONT)
        for child in mesh.processes.values():
            child.signal(signal.SIGCONT)
        mesh.stop()
        with contextlib.suppress(Exception):
            stop_embedded_postgres(mesh.data_dir)
        if os.environ.get("CHAOS_KEEP_LOGS", "") not in ("", "0"):
            _log(f"logs kept in {mesh.log_dir}")
        else:
            shutil.rmtree(base, ignore_errors=True)


# ---- steady load -----------------------------------------------------------------------------


@dataclass
class Turn:
    started: float
    ended: float
    ok: bool
    run_id: str = ""
    error: str = ""
    client: int = -1


@dataclass
class Client:
    email: str
    password: str
    token: str
    session_id: str
    turns_in_session: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


PASSWORD = "Chaos-Pa55word!"


def error_reason(response: httpx.Response) -> str:
    """The ErrorInfo reason of a gateway error body (google.rpc.Status as JSON)."""
    try:
        details = response.json().get("details") or []
    except (ValueError, AttributeError):
        return ""
    return next((str(d["reason"]) for d in details if isinstance(d, dict) and d.get("reason")), "")


class Load:
    """Closed-loop clients chatting through the gateway until stopped; every turn recorded."""

    def __init__(self, mesh: Mesh, concurrency: int) -> None:
        self.mesh = mesh
        self.concurrency = concurrency
        self.turns: list[Turn] = []
        self.user_ids: list[str] = []
        self._stop = asyncio.Event()
        self._go = asyncio.Event()
        self._go.set()
        self._in_flight = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._http = httpx.AsyncClient(base_url=mesh.gateway_url, timeout=TURN_TIMEOUT_S)
        self._auth = grpc.aio.insecure_channel(mesh.addr("auth"))
        self._sessions = grpc.aio.insecure_channel(mesh.addr("sessions"))

    async def new_client(self) -> Client:
        email = f"chaos-{uuid.uuid4().hex[:12]}@example.com"
        auth = auth_pb2_grpc.AuthServiceStub(self._auth)
        registered = await auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD), timeout=30)
        self.user_ids.append(registered.user.id)
        client = Client(email, PASSWORD, registered.tokens.access_token, "")
        client.session_id = await self._new_session(client)
        return client

    async def _new_session(self, client: Client) -> str:
        stub = sessions_pb2_grpc.SessionServiceStub(self._sessions)
        metadata = (("authorization", f"Bearer {client.token}"),)
        created = await stub.CreateSession(sessions_pb2.CreateSessionRequest(), metadata=metadata, timeout=10)
        return str(created.session.session_id)

    async def turn(self, client: Client, text: str, timeout_s: float = TURN_TIMEOUT_S) -> Turn:
        started = time.monotonic()
        body = {"message": {"role": "user", "content": text}}
        try:
            response = await self._http.post(
                f"/v1/sessions/{client.session_id}:chat", json=body, headers=client.headers, timeout=timeout_s
            )
        except httpx.HTTPError as exc:
            return Turn(started, time.monotonic(), False, error=type(exc).__name__)
        ended = time.monotonic()
        if response.status_code != 200:
            return Turn(started, ended, False, error=f"HTTP {response.status_code} {error_reason(response)}".strip())
        data = response.json()
        return Turn(started, ended, True, run_id=str(data.get("runId") or data.get("run_id") or ""))

    async def _rotate(self, client: Client) -> None:
        client.turns_in_session += 1
        if client.turns_in_session >= SESSION_TURNS:
            with contextlib.suppress(grpc.aio.AioRpcError):
                client.session_id = await self._new_session(client)
                client.turns_in_session = 0

    async def _loop(self, index: int, client: Client) -> None:
        while not self._stop.is_set():
            await self._go.wait()
            if self._stop.is_set():
                return
            self._in_flight += 1
            try:
                # A new fact every turn: the memory service owes a write for each one.
                turn = await self.turn(client, f"I like chaos topic {uuid.uuid4().hex[:10]}.")
            finally:
                self._in_flight -= 1
            turn.client = index
            self.turns.append(turn)
            if not turn.ok:
                with contextlib.suppress(asyncio.TimeoutError):  # a user retries, but not in a hot loop
                    await asyncio.wait_for(self._stop.wait(), FAILED_TURN_PAUSE_S)
                continue
            await self._rotate(client)

    async def start(self) -> None:
        clients = await asyncio.gather(*(self.new_client() for _ in range(self.concurrency)))
        self._tasks = [asyncio.create_task(self._loop(i, client)) for i, client in enumerate(clients)]

    def all_served_since(self, moment: float) -> bool:
        """Whether every client has had a turn answered that started at or after `moment`."""
        served = {t.client for t in self.turns if t.ok and t.started >= moment}
        return len(served) >= self.concurrency

    async def pause(self) -> None:
        """No new turns; returns once the turns in flight have ended."""
        self._go.clear()
        while self._in_flight:  # noqa: ASYNC110 (a short wait for a few turns, polled)
            await asyncio.sleep(0.05)

    def resume(self) -> None:
        self._go.set()

    async def stop(self) -> None:
        self._stop.set()
        self._go.set()
        for task in self._tasks:  # a turn in flight may take TURN_TIMEOUT_S; the end need not wait
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self._http.aclose()
        await self._auth.close()
        await self._sessions.close()


# ---- checks --------------------------------------------------------------------------------


class Checks:
    """What "recovered" and "nothing lost" mean, asked of the real processes and database."""

    def __init__(self, supervised: SupervisedMesh, load: Load) -> None:
        self.supervised = supervised
        self.mesh = supervised.mesh
        self.load = load
        self.database_url = self.mesh.env["DATABASE_URL"]
        self._canary: Client | None = None

    async def _db(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.database_url, autocommit=True, connect_timeout=3)

    async def db_now(self) -> Any:
        async with await self._db() as conn:
            row = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
        assert row is not None
        return row[0]

    async def serving(self) -> bool:
        if self.supervised.not_ready():
            return False
        for name, service in GRPC_SERVICES.items():
            try:
                async with grpc.aio.insecure_channel(self.mesh.addr(name)) as channel:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=2
                    )
            except grpc.aio.AioRpcError:
                return False
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                return False
        try:
            async with httpx.AsyncClient(base_url=self.mesh.gateway_url, timeout=2) as client:
                if (await client.get("/readyz")).status_code != 200:
                    return False
        except httpx.HTTPError:
            return False
        return True

    async def canary_turn(self) -> bool:
        try:
            if self._canary is None:
                self._canary = await self.load.new_client()
            # A fact like every turn's: the canary's runs are checked for their hand-offs too.
            text = f"I like canary topic {uuid.uuid4().hex[:10]}."
            return (await self.load.turn(self._canary, text, timeout_s=15)).ok
        except grpc.aio.AioRpcError:
            return False

    async def wait_recovered(self, timeout_s: float) -> float | None:
        """Seconds until the mesh serves everyone again: every health SERVING, /readyz 200, a new
        client's chat turn answered, and each load client's too (a session whose turn was cut
        off stays busy until that run is settled); None if not within `timeout_s`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if await self.serving() and await self.canary_turn() and self.load.all_served_since(started):
                return time.monotonic() - started
            await asyncio.sleep(0.25)
        return None

    async def lost_hand_offs(self, since: Any, until: Any) -> tuple[list[str], list[str], int]:
        """Succeeded runs that ended in [since, until) without their memory write or trace, and
        the outbox's dead letters of the window."""
        async with await self._db() as conn:
            rows = await (
                await conn.execute(
                    "SELECT r.run_id::text,"
                    " EXISTS (SELECT 1 FROM memory.add_requests a WHERE a.user_id = r.user_id"
                    "   AND a.idempotency_key = r.run_id::text),"
                    " EXISTS (SELECT 1 FROM evals.traces t WHERE t.trace_id = r.run_id::text)"
                    " FROM agent.runs r WHERE r.status = 'succeeded' AND r.end_time >= %s AND r.end_time < %s",
                    (since, until),
                )
            ).fetchall()
            dead = await (
                await conn.execute(
                    "SELECT count(*) FROM agent.outbox WHERE dead_at IS NOT NULL AND created_at >= %s"
                    " AND created_at < %s",
                    (since, until),
                )
            ).fetchone()
        memory = [run_id for run_id, has_memory, _ in rows if not has_memory]
        traces = [run_id for run_id, _, has_trace in rows if not has_trace]
        return memory, traces, int(dead[0]) if dead else 0

    async def succeeded_runs(self, since: Any, until: Any) -> int:
        async with await self._db() as conn:
            row = await (
                await conn.execute(
                    "SELECT count(*) FROM agent.runs WHERE status = 'succeeded' AND end_time >= %s AND end_time < %s",
                    (since, until),
                )
            ).fetchone()
        return int(row[0]) if row else 0

    async def wait_delivered(self, since: Any, until: Any, timeout_s: float) -> tuple[float, list[str], list[str], int]:
        """Polls until every succeeded run of the window has its memory write and trace (the
        outbox delivered), or the timeout; returns the wait and what is still missing."""
        started = time.monotonic()
        while True:
            try:
                memory, traces, dead = await self.lost_hand_offs(since, until)
            except psycopg.Error:
                memory, traces, dead = ["?"], ["?"], 0
            if (not memory and not traces) or time.monotonic() - started > timeout_s:
                return time.monotonic() - started, memory, traces, dead
            await asyncio.sleep(1.0)


# ---- faults ----------------------------------------------------------------------------------


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
    _log(f"{fault}: injecting")
    await inject(supervised, fault, plan)
    removed = time.monotonic()
    recover_s = await checks.wait_recovered(plan.recovery_timeout_s)
    if recover_s is None:
        for name in supervised.not_ready() or [n for n in PROCESS_FAULT_TARGETS if fault.endswith(n)]:
            _log(f"{fault}: {name} did not recover in {plan.recovery_timeout_s:g}s; restarting it by hand")
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
    _log(
        f"{fault}: failed {result.turns_failed}/{result.turns_ok + result.turns_failed} turns, lost memory"
        f" {result.lost_memory_writes} traces {result.lost_traces}, recovered in {result.recover_s}s,"
        f" restarts {result.supervisor_restarts or '-'}, by hand {result.manual_restarts or 'never'}"
    )
    return result


async def run_suite(plan: Plan, env: dict[str, str] | None = None) -> dict[str, Any]:
    results: list[FaultResult] = []
    started = time.monotonic()
    with chaos_mesh(env) as supervised:
        _log(f"mesh up: gateway {supervised.mesh.gateway_url}; faults {', '.join(plan.faults)}")
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
