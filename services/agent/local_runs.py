"""The runs executing on this replica: starting them (new, queued or resumed after a
decision), stopping them (here, or by asking the replica that executes them), and ending
them all when the process stops.

A run's row is the shared truth; what lives here is only the task executing it and its
in-memory channel, which followers on this replica read instead of Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from agentmesh.agent.v1 import agent_pb2
from runtime.logging import get_logger
from services.agent.checkpoints import Checkpoints
from services.agent.executor import (
    CANCEL_INTERRUPT,
    CANCEL_ROLLBACK,
    CANCEL_SHUTDOWN,
    Execution,
    RunExecutor,
    cancelled_outcome,
)
from services.agent.run_event_writer import RunEventWriter
from services.agent.run_events import RunChannel, RunNotifier
from services.agent.run_rows import RunRow
from services.agent.run_store import RunStore

log = get_logger(__name__)

# How long CancelRun and ClearHistory wait for a run executing elsewhere to stop.
STOP_WAIT_S = 10.0


@dataclass(frozen=True)
class RunSettings:
    lease_s: float
    events_ttl_s: float
    flush_interval_s: float
    max_active_runs_per_user: int
    max_running_runs: int
    max_message_chars: int
    checkpoints_keep: int


def replica_id() -> str:
    # A restarted process is a new owner: it must not believe it holds its past leases.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def streamed_text(store: RunStore, run: RunRow) -> str:
    """What the run had said so far, from its stored token events."""
    text: list[str] = []
    after = 0
    while batch := await store.events_after(run.run_id, after):
        for seq, data in batch:
            event = agent_pb2.ChatEvent.FromString(data)
            if event.WhichOneof("event") == "token":
                text.append(event.token.text)
            after = seq
    return "".join(text)


class LocalRuns:
    def __init__(
        self,
        *,
        store: RunStore,
        executor: RunExecutor,
        checkpoints: Checkpoints,
        listen: Callable[[], Awaitable[psycopg.AsyncConnection]],
        settings: RunSettings,
    ) -> None:
        self._store = store
        self._executor = executor
        self._checkpoints = checkpoints
        self._settings = settings
        self.replica = replica_id()
        self.notifier = RunNotifier(listen, self._cancel_requested)
        self.writer = RunEventWriter(store, interval_s=settings.flush_interval_s)
        self._executions: dict[str, tuple[Execution, asyncio.Task[RunRow | None]]] = {}
        self._background: set[asyncio.Task[object]] = set()
        # False from drain or close on: no run starts here any more.
        self.accepting = True

    def channel(self, run_id: str) -> RunChannel | None:
        """The live channel of a run executing here; None when it executes elsewhere or has ended."""
        local = self._executions.get(run_id)
        return local[0].channel if local is not None else None

    def executing(self) -> list[str]:
        return list(self._executions)

    @property
    def full(self) -> bool:
        """At MAX_RUNNING_RUNS: no new run starts here until one ends."""
        cap = self._settings.max_running_runs
        return cap > 0 and len(self._executions) >= cap

    def start(
        self, run: RunRow, resume: dict[str, object] | None = None, recall: asyncio.Task[list[str]] | None = None
    ) -> None:
        channel = RunChannel(run, self._store, writer=self.writer, first_seq=run.last_seq + 1)
        execution = Execution(channel=channel, recall=recall)
        task = asyncio.create_task(self._executor.execute(run, execution, resume), name=f"run-{run.run_id}")
        self._executions[run.run_id] = (execution, task)
        task.add_done_callback(lambda done: self._ended(run, done))

    def _ended(self, run: RunRow, task: asyncio.Task[RunRow | None]) -> None:
        self._executions.pop(run.run_id, None)
        self.spawn(self._prune(run.session_id))
        finished = None if task.cancelled() or task.exception() is not None else task.result()
        # The run's end said whether the session had runs waiting; a run enqueued after that
        # is dispatched by its own creator or by the maintenance tick.
        waiting = finished is None or finished.session_has_pending is not False
        if self.accepting and waiting:
            self.spawn(self.dispatch(run.session_id))

    async def _prune(self, session_id: str) -> None:
        if not self._settings.checkpoints_keep:
            return
        try:
            await self._checkpoints.prune(session_id)
        except psycopg.Error as exc:  # e.g. a serialization failure against the next turn: the sweeper retries
            log.warning("checkpoint_prune_failed", session_id=session_id, error=type(exc).__name__)

    async def dispatch(self, session_id: str) -> None:
        """Starts the session's oldest pending run here, if no run of it is running and this
        replica has room (otherwise it stays pending for a replica that has)."""
        if not self.accepting or self.full:
            return
        try:
            run = await self._store.claim_next(session_id, self.replica)
        except psycopg.Error as exc:
            log.warning("run_dispatch_failed", session_id=session_id, error=type(exc).__name__)
            return
        if run is not None:
            self.start(run)

    async def stop(self, run: RunRow, action: str) -> None:
        if run.status == "pending":
            outcome, last = cancelled_outcome(action)
            last.run_id, last.seq = run.run_id, 1
            await self._store.cancel_pending(run.run_id, outcome, last.SerializeToString())
            self.notifier.wake(run.run_id)
            return
        if run.status == "interrupted":
            await self._end_paused(run, action)
            return
        if run.status != "running":
            return
        if not self.cancel_local(run.run_id, action):
            await self._store.request_cancel(run.run_id, action)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            current = await self._store.get(run.run_id)
            if current is None or current.ended:
                return
            waiter = self.notifier.waiter(run.run_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), 0.5)

    async def _end_paused(self, run: RunRow, action: str) -> None:
        """Cancels a run waiting for a person: nothing executes it, so this replica ends it."""
        if action != CANCEL_ROLLBACK:
            await self._executor.keep_interrupted(run, await streamed_text(self._store, run))
        outcome, last = cancelled_outcome(action)
        last.run_id, last.seq = run.run_id, run.last_seq + 1
        await self._store.finish(
            run.run_id, outcome, [(last.seq, last.SerializeToString())], from_statuses=("interrupted",)
        )
        self.notifier.wake(run.run_id)
        self.spawn(self.dispatch(run.session_id))

    async def cancel_session_runs(self, session_id: str, action: str) -> None:
        for run in await self._store.active_in_session(session_id):
            if run.status in ("pending", "interrupted"):
                await self.stop(run, action)
            elif not self.cancel_local(run.run_id, action):
                await self._store.request_cancel(run.run_id, action)

    def cancel_local(self, run_id: str, action: str) -> bool:
        local = self._executions.get(run_id)
        if local is None:
            return False
        execution, task = local
        if execution.cancel_action is None:
            execution.cancel_action = action
            task.cancel()
        return True

    def _cancel_requested(self, run_id: str, action: str) -> None:
        self.cancel_local(run_id, action or CANCEL_INTERRUPT)

    async def resume_if_ready(self, run_id: str) -> None:
        if not self.accepting:
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
        self.start(run, resume=decisions)

    def spawn(self, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, grace_s: float) -> None:
        """SIGTERM: take no new runs, let the ones here finish within most of the grace,
        then end the rest (kept in history as interrupted, FAILED with a clear error) so
        that every follower sees a last event before the server stops."""
        self.accepting = False
        tasks = [task for _, task in self._executions.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, grace_s * 0.8 - 1.0))
        for run_id in list(self._executions):
            self.cancel_local(run_id, CANCEL_SHUTDOWN)
        remaining = [task for _, task in self._executions.values()]
        if remaining:
            await asyncio.wait(remaining, timeout=max(1.0, grace_s * 0.2))

    async def close(self, *others: asyncio.Task[None]) -> None:
        """Cancels every run and background task here, and `others` with them."""
        self.accepting = False
        tasks: list[asyncio.Task[Any]] = [task for _, task in self._executions.values()]
        tasks += [*self._background, *others]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.writer.close()
        await self.notifier.close()
