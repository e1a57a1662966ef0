"""Runs as resources: create (with a double-texting strategy), get, list, follow,
cancel; and the replica's share of the shared work: renewing its leases, failing runs
whose replica died, starting queued runs, pruning old events, draining at shutdown.

Which replica executes a run does not matter to its clients: they follow the run's
event log, from memory when the run executes here, from Postgres otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import grpc
import psycopg

from agentmesh.agent.v1 import agent_pb2
from runtime.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    error_for_status,
)
from runtime.ids import parse_id
from runtime.logging import get_logger
from runtime.paging import decode_page_token, one_page, page_size
from runtime.principal import Principal
from services.agent import metrics
from services.agent.approvals import ANSWER, APPROVE, EDIT, KIND_QUESTION, REJECT
from services.agent.checkpoints import Checkpoints
from services.agent.client_message import user_message_text
from services.agent.executor import (
    CANCEL_INTERRUPT,
    CANCEL_ROLLBACK,
    CANCEL_SHUTDOWN,
    Execution,
    RunExecutor,
    cancelled_outcome,
    error_event,
)
from services.agent.run_events import RunChannel, RunNotifier, StoredFollow, follow_stored, is_terminal
from services.agent.run_messages import DECISION_NAMES
from services.agent.run_store import InterruptRow, RunOutcome, RunRow, RunStore, SessionBusy
from services.agent.session_access import SessionAccess

log = get_logger(__name__)

STRATEGY_NAMES = {
    agent_pb2.MULTITASK_STRATEGY_UNSPECIFIED: "reject",
    agent_pb2.MULTITASK_STRATEGY_REJECT: "reject",
    agent_pb2.MULTITASK_STRATEGY_ENQUEUE: "enqueue",
    agent_pb2.MULTITASK_STRATEGY_INTERRUPT: "interrupt",
    agent_pb2.MULTITASK_STRATEGY_ROLLBACK: "rollback",
}
CANCEL_ACTIONS = {
    agent_pb2.CANCEL_ACTION_UNSPECIFIED: CANCEL_INTERRUPT,
    agent_pb2.CANCEL_ACTION_INTERRUPT: CANCEL_INTERRUPT,
    agent_pb2.CANCEL_ACTION_ROLLBACK: CANCEL_ROLLBACK,
}
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# How long CancelRun and ClearHistory wait for a run executing elsewhere to stop.
STOP_WAIT_S = 10.0
LOST_MESSAGE = "the agent replica running this turn stopped before it finished; send the message again"


@dataclass(frozen=True)
class RunSettings:
    lease_s: float
    events_ttl_s: float
    flush_interval_s: float
    max_active_runs_per_user: int
    max_message_chars: int
    checkpoints_keep: int


def replica_id() -> str:
    # A restarted process is a new owner: it must not believe it holds its past leases.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Runs:
    def __init__(
        self,
        *,
        store: RunStore,
        executor: RunExecutor,
        sessions: SessionAccess,
        checkpoints: Checkpoints,
        listen: Callable[[], Awaitable[psycopg.AsyncConnection]],
        settings: RunSettings,
    ) -> None:
        self._store = store
        self._checkpoints = checkpoints
        self._executor = executor
        self._sessions = sessions
        self._settings = settings
        self.replica = replica_id()
        self._notifier = RunNotifier(listen, self._cancel_requested)
        self._executions: dict[str, tuple[Execution, asyncio.Task[RunRow | None]]] = {}
        self._background: set[asyncio.Task[object]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self._accepting = True

    async def start(self) -> None:
        self._notifier.start()
        self._maintenance = asyncio.create_task(self._maintain_forever(), name="run-maintenance")

    # ---- the RPCs' domain -------------------------------------------------------------

    async def create(self, principal: Principal, session_id: str, message: agent_pb2.Message, strategy: int) -> RunRow:
        content = user_message_text(message, self._settings.max_message_chars)
        strategy_name = STRATEGY_NAMES.get(strategy)
        if strategy_name is None:
            raise InvalidArgument("multitask_strategy is not a known strategy", reason="STRATEGY_INVALID")
        await self._sessions.require_own(session_id)
        if not self._accepting:
            raise Unavailable("this agent replica is shutting down; try again", reason="AGENT_DRAINING")
        try:
            run = await self._insert(principal, session_id, content, strategy_name, owner=self.replica)
        except SessionBusy:
            if strategy_name == "reject":
                metrics.run_lock_conflicts_total.inc()
                raise Aborted(
                    "another turn is already running on this session; wait for it to finish, or send the message"
                    " with multitask_strategy ENQUEUE, INTERRUPT or ROLLBACK",
                    reason="SESSION_BUSY",
                ) from None
            if strategy_name in ("interrupt", "rollback"):
                await self._cancel_session_runs(
                    session_id, CANCEL_INTERRUPT if strategy_name == "interrupt" else CANCEL_ROLLBACK
                )
            run = await self._insert(principal, session_id, content, strategy_name, owner=None)
            self._spawn(self._dispatch(session_id))
            return run
        self._start(run)
        return run

    async def _insert(
        self, principal: Principal, session_id: str, content: str, strategy: str, owner: str | None
    ) -> RunRow:
        run = await self._store.insert(
            session_id=session_id,
            user_id=principal.user_id,
            content=content,
            strategy=strategy,
            owner=owner,
            max_active_per_user=self._settings.max_active_runs_per_user,
        )
        if run is None:
            raise ResourceExhausted(
                f"you already have {self._settings.max_active_runs_per_user} turns pending or running;"
                " wait for one to finish",
                reason="ACTIVE_RUNS_QUOTA_EXCEEDED",
                metadata={"quota": "MAX_ACTIVE_RUNS_PER_USER", "limit": str(self._settings.max_active_runs_per_user)},
            )
        return run

    async def get(self, principal: Principal, session_id: str, run_id: str) -> RunRow:
        await self._sessions.require_own(session_id)
        run = await self._store.get(parse_id(run_id, "run_id"))
        if run is None or run.session_id != session_id or run.user_id != principal.user_id:
            raise NotFound("run not found", reason="RUN_NOT_FOUND")
        return run

    async def list(self, session_id: str, requested_size: int, page_token: str) -> tuple[list[RunRow], str]:
        await self._sessions.require_own(session_id)
        size = page_size(requested_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        after = decode_page_token(page_token, datetime.fromisoformat, uuid.UUID) if page_token else None
        rows = await self._store.list(session_id, size + 1, after)
        return one_page(rows, size, lambda row: (row.create_time, row.run_id))

    async def cancel(self, principal: Principal, session_id: str, run_id: str, action: int) -> RunRow:
        run = await self.get(principal, session_id, run_id)
        name = CANCEL_ACTIONS.get(action)
        if name is None:
            raise InvalidArgument("action must be INTERRUPT or ROLLBACK", reason="CANCEL_ACTION_INVALID")
        await self._stop(run, name)
        return await self.get(principal, session_id, run_id)

    async def pending_interrupts(self, run: RunRow) -> list[InterruptRow]:
        if run.status != "interrupted":
            return []
        return [row for row in await self._store.interrupts(run.run_id) if row.decision is None]

    async def decisions(self, principal: Principal, session_id: str, run_id: str) -> list[InterruptRow]:
        run = await self.get(principal, session_id, run_id)
        return await self._store.interrupts(run.run_id)

    async def resume(
        self,
        principal: Principal,
        session_id: str,
        run_id: str,
        interrupt_id: str,
        decision: int,
        arguments_json: str,
        answer: str,
    ) -> RunRow:
        """Records a person's decision on one interrupt; the run goes on once all of its
        pause's interrupts are decided. The same decision twice is accepted once."""
        run = await self.get(principal, session_id, run_id)
        row = await self._store.get_interrupt(parse_id(interrupt_id, "interrupt_id"))
        if row is None or row.run_id != run.run_id:
            raise FailedPrecondition("this interrupt does not belong to the run", reason="INTERRUPT_NOT_OF_RUN")
        name, edited = self._checked_decision(row, decision, arguments_json, answer)
        if row.decision is None:
            if run.status != "interrupted":
                raise FailedPrecondition("the run is not waiting for a decision", reason="RUN_NOT_PAUSED")
            decided = await self._store.decide(
                row.interrupt_id,
                decision=name,
                edited_arguments_json=edited,
                answer=answer,
                decided_by=principal.user_id,
            )
            if decided is not None:
                metrics.decisions_total.labels(decision=name).inc()
                metrics.decision_seconds.observe((decided.decide_time - decided.create_time).total_seconds())
            row = decided or await self._store.get_interrupt(row.interrupt_id) or row
        if row.decision is None:
            raise FailedPrecondition("the interrupt expired; it was resolved as REJECT", reason="INTERRUPT_EXPIRED")
        if (row.decision, row.edited_arguments_json, row.answer) != (name, edited, answer):
            if row.decided_by == "system:expired":
                raise FailedPrecondition("the interrupt expired; it was resolved as REJECT", reason="INTERRUPT_EXPIRED")
            raise FailedPrecondition("the interrupt was already decided otherwise", reason="INTERRUPT_ALREADY_DECIDED")
        await self._resume_if_ready(run.run_id)
        return await self.get(principal, session_id, run_id)

    @staticmethod
    def _checked_decision(row: InterruptRow, decision: int, arguments_json: str, answer: str) -> tuple[str, str]:
        name = DECISION_NAMES.get(decision)
        allowed = (ANSWER, REJECT) if row.kind == KIND_QUESTION else (APPROVE, REJECT, EDIT)
        if name not in allowed:
            raise InvalidArgument(
                f"decision must be one of {', '.join(n.upper() for n in allowed)} for this interrupt",
                reason="DECISION_INVALID",
            )
        if name == EDIT:
            try:
                parsed = json.loads(arguments_json)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise InvalidArgument("arguments_json must be a JSON object for EDIT", reason="ARGUMENTS_INVALID")
            return name, json.dumps(parsed, sort_keys=True, separators=(",", ":"))
        if arguments_json:
            raise InvalidArgument("arguments_json is only for EDIT", reason="ARGUMENTS_INVALID")
        if name == ANSWER and not answer.strip():
            raise InvalidArgument("answer must not be empty", reason="ANSWER_REQUIRED")
        if name != ANSWER and answer:
            raise InvalidArgument("answer is only for ANSWER", reason="ANSWER_INVALID")
        return name, ""

    async def _resume_if_ready(self, run_id: str) -> None:
        if not self._accepting:
            return
        run = await self._store.claim_for_resume(run_id, self.replica)
        if run is None:
            return  # still waiting for other decisions, or resumed by another replica
        rows = await self._store.interrupts(run_id)
        last_pause = max(row.pause for row in rows)
        decisions = {
            row.tool_call_id: {
                "decision": row.decision,
                "arguments": json.loads(row.edited_arguments_json) if row.edited_arguments_json else {},
                "arguments_sha256": row.arguments_sha256,
                "answer": row.answer,
            }
            for row in rows
            if row.pause == last_pause
        }
        self._start(run, resume=decisions)

    async def follow(self, run_id: str, after_seq: int) -> AsyncIterator[agent_pb2.ChatEvent]:
        """Every event after `after_seq` exactly once, in order, then live until the run ends."""
        if after_seq < 0:
            raise InvalidArgument("after_seq must not be negative", reason="AFTER_SEQ_INVALID")
        position = StoredFollow(last_seq=after_seq)
        source = ""
        while True:
            local = self._executions.get(run_id)
            if local is not None:
                source = source or "local"
                channel = local[0].channel
                # A resumed run's channel starts after its pause: the events before are stored.
                while position.last_seq < channel.first_seq - 1:
                    earlier = await self._store.events_after(run_id, position.last_seq)
                    earlier = [(seq, data) for seq, data in earlier if seq < channel.first_seq]
                    if not earlier:
                        break
                    for seq, data in earlier:
                        position.last_seq = seq
                        yield agent_pb2.ChatEvent.FromString(data)
                async for event in channel.follow(position.last_seq):
                    position.last_seq = event.seq
                    yield event
                break
            source = source or "stored"
            async for event in follow_stored(self._store, self._notifier, run_id, position):
                yield event
            if position.done:
                break
        metrics.run_follows_total.labels(source=source).inc()

    def cancel_on_disconnect(self, rpc: grpc.aio.ServicerContext, run: RunRow) -> None:
        """ON_DISCONNECT_CANCEL: the caller going away stops the run (keeping what it said)."""

        def on_done(_: object) -> None:
            # A call that ended normally has seen the run's last event: stopping it is a no-op.
            self._spawn(self._stop_by_id(run.run_id, CANCEL_INTERRUPT))

        rpc.add_done_callback(on_done)

    async def _stop_by_id(self, run_id: str, action: str) -> None:
        run = await self._store.get(run_id)
        if run is not None:
            await self._stop(run, action)

    async def stop_session(self, session_id: str) -> None:
        """Rolls back every pending and running run of the session and waits for them to end
        (before its conversation is cleared); ABORTED if one will not stop in time."""
        await self._cancel_session_runs(session_id, CANCEL_ROLLBACK)
        deadline = time.monotonic() + STOP_WAIT_S
        while await self._store.active_in_session(session_id):
            if time.monotonic() > deadline:
                raise Aborted("a turn on this session did not stop in time; try again", reason="SESSION_BUSY")
            await asyncio.sleep(0.05)

    async def delete_session_runs(self, session_id: str) -> None:
        await self._store.delete_session_runs(session_id)

    # ---- executing ---------------------------------------------------------------------

    def _start(self, run: RunRow, resume: dict[str, object] | None = None) -> None:
        channel = RunChannel(
            run, self._store, flush_interval_s=self._settings.flush_interval_s, first_seq=run.last_seq + 1
        )
        execution = Execution(channel=channel)
        task = asyncio.create_task(self._executor.execute(run, execution, resume), name=f"run-{run.run_id}")
        self._executions[run.run_id] = (execution, task)
        task.add_done_callback(lambda _: self._ended(run))

    def _ended(self, run: RunRow) -> None:
        self._executions.pop(run.run_id, None)
        self._spawn(self._prune(run.session_id))
        if self._accepting:
            self._spawn(self._dispatch(run.session_id))

    async def _prune(self, session_id: str) -> None:
        if not self._settings.checkpoints_keep:
            return
        try:
            await self._checkpoints.prune(session_id)
        except psycopg.Error as exc:  # e.g. a serialization failure against the next turn: the sweeper retries
            log.warning("checkpoint_prune_failed", session_id=session_id, error=type(exc).__name__)

    async def _dispatch(self, session_id: str) -> None:
        """Starts the session's oldest pending run here, if no run of it is running."""
        if not self._accepting:
            return
        try:
            run = await self._store.claim_next(session_id, self.replica)
        except psycopg.Error as exc:
            log.warning("run_dispatch_failed", session_id=session_id, error=type(exc).__name__)
            return
        if run is not None:
            self._start(run)

    async def _stop(self, run: RunRow, action: str) -> None:
        if run.status == "pending":
            outcome, last = cancelled_outcome(action)
            last.run_id, last.seq = run.run_id, 1
            await self._store.cancel_pending(run.run_id, outcome, last.SerializeToString())
            self._notifier.wake(run.run_id)
            return
        if run.status == "interrupted":
            await self._end_paused(run, action)
            return
        if run.status != "running":
            return
        if not self._cancel_local(run.run_id, action):
            await self._store.request_cancel(run.run_id, action)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            current = await self._store.get(run.run_id)
            if current is None or current.ended:
                return
            waiter = self._notifier.waiter(run.run_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), 0.5)

    async def _end_paused(self, run: RunRow, action: str) -> None:
        """Cancels a run waiting for a person: nothing executes it, so this replica ends it."""
        if action != CANCEL_ROLLBACK:
            await self._executor.keep_interrupted(run, await self._streamed_text(run))
        outcome, last = cancelled_outcome(action)
        last.run_id, last.seq = run.run_id, run.last_seq + 1
        await self._store.finish(
            run.run_id, outcome, [(last.seq, last.SerializeToString())], from_statuses=("interrupted",)
        )
        self._notifier.wake(run.run_id)
        self._spawn(self._dispatch(run.session_id))

    async def _cancel_session_runs(self, session_id: str, action: str) -> None:
        for run in await self._store.active_in_session(session_id):
            if run.status in ("pending", "interrupted"):
                await self._stop(run, action)
            elif not self._cancel_local(run.run_id, action):
                await self._store.request_cancel(run.run_id, action)

    def _cancel_local(self, run_id: str, action: str) -> bool:
        local = self._executions.get(run_id)
        if local is None:
            return False
        execution, task = local
        if execution.cancel_action is None:
            execution.cancel_action = action
            task.cancel()
        return True

    def _cancel_requested(self, run_id: str, action: str) -> None:
        self._cancel_local(run_id, action or CANCEL_INTERRUPT)

    # ---- the replica's share of the shared work ----------------------------------------

    async def _maintain_forever(self) -> None:
        tick_s = min(1.0, self._settings.lease_s / 3)
        renew_every_s = self._settings.lease_s / 3
        prune_every_s = max(1.0, min(60.0, self._settings.events_ttl_s / 4))
        last_renew = last_prune = 0.0
        while True:
            await asyncio.sleep(tick_s)
            now = time.monotonic()
            try:
                if now - last_renew >= renew_every_s:
                    last_renew = now
                    await self._renew()
                await self._fail_lost_runs()
                await self._dispatch_pending()
                await self._resume_decided()
                if now - last_prune >= prune_every_s:
                    last_prune = now
                    pruned = await self._store.prune_events(self._settings.events_ttl_s)
                    if pruned:
                        log.info("run_events_pruned", runs=pruned)
                    threads = await self._checkpoints.prune_overgrown() if self._settings.checkpoints_keep else 0
                    if threads:
                        log.info("checkpoints_pruned", threads=threads)
            except (psycopg.Error, OSError) as exc:
                log.warning("run_maintenance_failed", error=type(exc).__name__)

    async def _renew(self) -> None:
        if not self._executions:
            return
        for run_id, action in (await self._store.renew_leases(self.replica, list(self._executions))).items():
            if action:  # a cancel whose notification this replica missed
                self._cancel_local(run_id, action)

    async def _fail_lost_runs(self) -> None:
        for run_id in await self._store.expired_leases(limit=20):
            run = await self._store.take_over_lost(run_id, self.replica)
            if run is None:
                continue
            text = await self._streamed_text(run)
            await self._executor.keep_interrupted(run, text)
            last = error_event(grpc.StatusCode.UNAVAILABLE, LOST_MESSAGE, "RUN_LOST")
            last.run_id, last.seq = run.run_id, run.last_seq + 1
            outcome = RunOutcome(
                status="failed",
                error_code=grpc.StatusCode.UNAVAILABLE.value[0],
                error_message=LOST_MESSAGE,
                error_reason="RUN_LOST",
            )
            await self._store.finish(run.run_id, outcome, [(last.seq, last.SerializeToString())])
            metrics.runs_lost_total.inc()
            log.warning("run_lost", run_id=run.run_id, session_id=run.session_id, lost_owner=run.lease_owner)
            self._spawn(self._dispatch(run.session_id))

    async def _streamed_text(self, run: RunRow) -> str:
        text: list[str] = []
        after = 0
        while batch := await self._store.events_after(run.run_id, after):
            for seq, data in batch:
                event = agent_pb2.ChatEvent.FromString(data)
                if event.WhichOneof("event") == "token":
                    text.append(event.token.text)
                after = seq
        return "".join(text)

    async def _resume_decided(self) -> None:
        """Interrupts past their expiry are resolved as REJECT; paused runs whose every
        interrupt is decided (also by a replica that died before resuming) go on here."""
        if not self._accepting:
            return
        expired = await self._store.expire_interrupts(limit=50)
        if expired:
            metrics.decisions_total.labels(decision="expired").inc(len(expired))
        for run_id in expired | set(await self._store.interrupted_runs_ready(limit=20)):
            await self._resume_if_ready(run_id)

    async def _dispatch_pending(self) -> None:
        if not self._accepting:
            return
        for session_id in await self._store.sessions_with_pending_runs(limit=20):
            await self._dispatch(session_id)

    def _spawn(self, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, grace_s: float) -> None:
        """SIGTERM: take no new runs, let the ones here finish within most of the grace,
        then end the rest (kept in history as interrupted, FAILED with a clear error) so
        that every follower sees a last event before the server stops."""
        self._accepting = False
        tasks = [task for _, task in self._executions.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, grace_s * 0.8 - 1.0))
        for run_id in list(self._executions):
            self._cancel_local(run_id, CANCEL_SHUTDOWN)
        remaining = [task for _, task in self._executions.values()]
        if remaining:
            await asyncio.wait(remaining, timeout=max(1.0, grace_s * 0.2))

    async def close(self) -> None:
        self._accepting = False
        tasks = [task for _, task in self._executions.values()] + list(self._background)
        if self._maintenance is not None:
            tasks.append(self._maintenance)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._notifier.close()


def ending_error(event: agent_pb2.ChatEvent) -> DomainError | None:
    """The status a Chat or StreamChat call ends with, from its run's last event."""
    if not is_terminal(event) or event.WhichOneof("event") != "error":
        return None
    code = grpc.StatusCode.UNKNOWN
    for candidate in grpc.StatusCode:
        if candidate.value[0] == event.error.code:
            code = candidate
    return error_for_status(code, event.error.message, reason=event.error.reason or None)
