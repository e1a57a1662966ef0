"""Runs as resources: create (with a double-texting strategy), get, list, follow,
cancel, resume after a decision. Executing them is `local_runs`, the replica's share of
the shared work `run_maintenance`.

Which replica executes a run does not matter to its clients: they follow the run's
event log, from memory when the run executes here, from Postgres otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
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
from runtime.paging import decode_page_token, one_page, page_size
from runtime.principal import Principal
from services.agent import metrics
from services.agent.approvals import ANSWER, APPROVE, EDIT, KIND_QUESTION, REJECT
from services.agent.checkpoints import Checkpoints
from services.agent.client_message import user_message_text
from services.agent.executor import CANCEL_INTERRUPT, CANCEL_ROLLBACK, RunExecutor
from services.agent.local_runs import STOP_WAIT_S, LocalRuns, RunSettings
from services.agent.run_events import StoredFollow, follow_stored, is_terminal
from services.agent.run_maintenance import RunMaintenance
from services.agent.run_messages import DECISION_NAMES
from services.agent.run_rows import InterruptRow, RunRow
from services.agent.run_store import RunStore, SessionBusy
from services.agent.session_access import SessionAccess

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
        self._executor = executor
        self._sessions = sessions
        self._settings = settings
        self._local = LocalRuns(
            store=store, executor=executor, checkpoints=checkpoints, listen=listen, settings=settings
        )
        self._maintenance = RunMaintenance(
            store=store, local=self._local, executor=executor, checkpoints=checkpoints, settings=settings
        )
        self._maintenance_task: asyncio.Task[None] | None = None

    @property
    def replica(self) -> str:
        return self._local.replica

    async def start(self) -> None:
        self._local.notifier.start()
        self._local.writer.start()
        self._maintenance_task = self._maintenance.start()

    async def create(self, principal: Principal, session_id: str, message: agent_pb2.Message, strategy: int) -> RunRow:
        content = user_message_text(message, self._settings.max_message_chars)
        strategy_name = STRATEGY_NAMES.get(strategy)
        if strategy_name is None:
            raise InvalidArgument("multitask_strategy is not a known strategy", reason="STRATEGY_INVALID")
        if not self._local.accepting:
            raise Unavailable("this agent replica is shutting down; try again", reason="AGENT_DRAINING")
        if self._local.full:
            metrics.runs_refused_total.labels(reason="replica_full").inc()
            raise Unavailable(
                "this agent replica is running as many turns as it may; try again shortly",
                reason="AGENT_AT_CAPACITY",
                metadata={"retry_after_s": "1", "limit": str(self._settings.max_running_runs)},
            )
        recall = self._executor.recall_ahead(principal.user_id, content)
        try:
            await self._sessions.require_own(session_id)
            run = await self._create(principal, session_id, content, strategy_name)
        except BaseException:
            if recall is not None:
                recall.cancel()
            raise
        if run.lease_owner != self._local.replica or run.status != "running":
            # Queued behind another run: its search runs when it starts, against memory as it is then.
            if recall is not None:
                recall.cancel()
            return run
        self._local.start(run, recall=recall)
        return run

    async def _create(self, principal: Principal, session_id: str, content: str, strategy_name: str) -> RunRow:
        """The run, started here (owned by this replica) or left pending behind the session's."""
        try:
            return await self._insert(principal, session_id, content, strategy_name, owner=self._local.replica)
        except SessionBusy:
            if strategy_name == "reject":
                metrics.run_lock_conflicts_total.inc()
                raise Aborted(
                    "another turn is already running on this session; wait for it to finish, or send the message"
                    " with multitask_strategy ENQUEUE, INTERRUPT or ROLLBACK",
                    reason="SESSION_BUSY",
                ) from None
            if strategy_name in ("interrupt", "rollback"):
                await self._local.cancel_session_runs(
                    session_id, CANCEL_INTERRUPT if strategy_name == "interrupt" else CANCEL_ROLLBACK
                )
            run = await self._insert(principal, session_id, content, strategy_name, owner=None)
            self._local.spawn(self._local.dispatch(session_id))
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
        await self._local.stop(run, name)
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
        await self._local.resume_if_ready(run.run_id)
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

    async def follow(self, run_id: str, after_seq: int) -> AsyncIterator[agent_pb2.ChatEvent]:
        """Every event after `after_seq` exactly once, in order, then live until the run ends."""
        if after_seq < 0:
            raise InvalidArgument("after_seq must not be negative", reason="AFTER_SEQ_INVALID")
        position = StoredFollow(last_seq=after_seq)
        source = ""
        while True:
            channel = self._local.channel(run_id)
            if channel is not None:
                source = source or "local"
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
            async for event in follow_stored(self._store, self._local.notifier, run_id, position):
                yield event
            if position.done:
                break
        metrics.run_follows_total.labels(source=source).inc()

    def cancel_on_disconnect(self, rpc: grpc.aio.ServicerContext, run: RunRow) -> None:
        """ON_DISCONNECT_CANCEL: the caller going away stops the run (keeping what it said)."""

        def on_done(_: object) -> None:
            # A call that ended normally has seen the run's last event: stopping it is a no-op.
            self._local.spawn(self._stop_by_id(run.run_id, CANCEL_INTERRUPT))

        rpc.add_done_callback(on_done)

    async def _stop_by_id(self, run_id: str, action: str) -> None:
        run = await self._store.get(run_id)
        if run is not None:
            await self._local.stop(run, action)

    async def stop_session(self, session_id: str) -> None:
        """Rolls back every pending and running run of the session and waits for them to end
        (before its conversation is cleared); ABORTED if one will not stop in time."""
        await self._local.cancel_session_runs(session_id, CANCEL_ROLLBACK)
        deadline = time.monotonic() + STOP_WAIT_S
        while await self._store.active_in_session(session_id):
            if time.monotonic() > deadline:
                raise Aborted("a turn on this session did not stop in time; try again", reason="SESSION_BUSY")
            await asyncio.sleep(0.05)

    async def delete_session_runs(self, session_id: str) -> None:
        await self._store.delete_session_runs(session_id)

    async def drain(self, grace_s: float) -> None:
        await self._local.drain(grace_s)

    async def close(self) -> None:
        await self._local.close(*([self._maintenance_task] if self._maintenance_task is not None else []))


def ending_error(event: agent_pb2.ChatEvent) -> DomainError | None:
    """The status a Chat or StreamChat call ends with, from its run's last event."""
    if not is_terminal(event) or event.WhichOneof("event") != "error":
        return None
    code = grpc.StatusCode.UNKNOWN
    for candidate in grpc.StatusCode:
        if candidate.value[0] == event.error.code:
            code = candidate
    return error_for_status(code, event.error.message, reason=event.error.reason or None)
