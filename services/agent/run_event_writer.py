"""Persisting the events of every run executing on this replica, together.

A run's followers on this replica read its events from memory; the database copy is for
followers elsewhere and for replay after a reconnect. Written per run, a streaming run
cost a statement every flush interval for as long as it lasted, so under load (slower
turns, more of them) the writes grew with concurrency times turn length. One writer per
replica writes what every run emitted since its last pass in one statement, so the cost
per interval stays one statement whatever the concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import psycopg

from runtime.logging import get_logger
from services.agent import metrics
from services.agent.run_store import RunStore

log = get_logger(__name__)

# After a failed write (the database struggling) the next pass waits this long at least.
FAILED_WRITE_PAUSE_S = 1.0


class PendingEvents(Protocol):
    """A run's side of the writer (RunChannel)."""

    @property
    def run_id(self) -> str: ...

    def unpersisted(self) -> tuple[list[tuple[int, bytes]], int]:
        """The events not stored yet, and the position they end at."""
        ...

    def persisted_to(self, position: int) -> None: ...


class RunEventWriter:
    def __init__(self, store: RunStore, *, interval_s: float) -> None:
        self._store = store
        self._interval_s = interval_s
        self._dirty: dict[str, PendingEvents] = {}
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_forever(), name="run-event-writer")

    def mark(self, run: PendingEvents) -> None:
        """The run has events to store: they go in the next pass."""
        self._dirty[run.run_id] = run
        self._due.set()

    def forget(self, run: PendingEvents) -> None:
        """The run stores the rest itself (with its end or its pause)."""
        self._dirty.pop(run.run_id, None)

    async def _write_forever(self) -> None:
        while True:
            await self._due.wait()
            # Events emitted meanwhile ride along: one statement per interval, not per event.
            await asyncio.sleep(self._interval_s)
            self._due.clear()
            if not await self.write_once():
                await asyncio.sleep(FAILED_WRITE_PAUSE_S)

    async def write_once(self) -> bool:
        """Stores what every marked run has pending; False when the database refused (the
        runs stay marked for the next pass)."""
        runs, self._dirty = self._dirty, {}
        batches = [(run, *run.unpersisted()) for run in runs.values()]
        rows = [(run.run_id, seq, data) for run, events, _ in batches for seq, data in events]
        if not rows:
            return True
        try:
            await self._store.append_events_of_runs(rows)
        except psycopg.Error as exc:
            # Followers here still have them; the next pass (or the run's end) retries.
            log.warning("run_events_flush_failed", runs=len(batches), error=type(exc).__name__)
            for run, _, _ in batches:
                self._dirty.setdefault(run.run_id, run)
            self._due.set()
            return False
        for run, _, position in batches:
            run.persisted_to(position)
        metrics.run_events_written_total.inc(len(rows))
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
