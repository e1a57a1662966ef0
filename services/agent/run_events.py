"""A run's event log: numbered, kept in memory on the replica that executes the run, and
persisted in small batches so that any replica can replay it and follow it live.

- `RunChannel`: the executing replica's side. `emit()` numbers an event and hands it to
  local followers at once (a first token never waits for a database write); the
  replica's `RunEventWriter` stores what every run accumulated, together, each interval.
  The last event and the run's final status are written in one statement, so "ended"
  and "has its last event" are never seen apart.
- `RunNotifier`: one LISTEN connection per replica on the `agent_runs` channel; wakes
  followers of runs executing elsewhere and delivers cancel requests.
- `follow_stored()`: replays stored events after a sequence number and follows new ones
  as their notifications arrive (or a short poll, if a notification was missed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import psycopg

from agentmesh.agent.v1 import agent_pb2
from runtime.logging import get_logger
from services.agent import metrics
from services.agent.outbox import OutboxItem
from services.agent.run_event_queries import CHANNEL, NOTE_CANCEL, NOTE_EVENTS
from services.agent.run_event_writer import RunEventWriter
from services.agent.run_rows import InterruptRow, RunOutcome, RunRow
from services.agent.run_store import RunStore

log = get_logger(__name__)

TERMINAL_EVENTS = frozenset({"completed", "error"})
# Without a notification (missed while the listener reconnected) a follower still looks
# this often.
FOLLOW_POLL_S = 1.0


def is_terminal(event: agent_pb2.ChatEvent) -> bool:
    """The last event of a stream: the run ended, or paused for a person (its last interrupt)."""
    kind = event.WhichOneof("event")
    return kind in TERMINAL_EVENTS or (kind == "interrupt" and event.interrupt.last)


class RunChannel:
    def __init__(self, run: RunRow, store: RunStore, *, writer: RunEventWriter, first_seq: int = 1) -> None:
        self.run = run
        self._store = store
        self._writer = writer
        self._first_seq = first_seq
        self.events: list[agent_pb2.ChatEvent] = []
        self._persisted = 0
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def unpersisted(self) -> tuple[list[tuple[int, bytes]], int]:
        end = len(self.events)
        return [(e.seq, e.SerializeToString()) for e in self.events[self._persisted : end]], end

    def persisted_to(self, position: int) -> None:
        self._persisted = max(self._persisted, position)

    @property
    def first_seq(self) -> int:
        """The first event this channel holds (a resumed run's earlier events are stored only)."""
        return self._first_seq

    @property
    def last_seq(self) -> int:
        return self._first_seq - 1 + len(self.events)

    def emit(self, event: agent_pb2.ChatEvent) -> None:
        """Numbers the event and makes it visible to followers; persisted shortly after."""
        if self._closed:
            return
        self._append(event)
        self._writer.mark(self)

    def _append(self, event: agent_pb2.ChatEvent) -> None:
        event.run_id = self.run.run_id
        event.seq = self.last_seq + 1
        self.events.append(event)
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    async def finish(
        self, outcome: RunOutcome, last: agent_pb2.ChatEvent, hand_offs: list[OutboxItem]
    ) -> RunRow | None:
        """Records the outcome with the run's last event and its hand-offs (atomically), then
        shows the event to local followers. None when the run was no longer ours to finish."""
        self._stop_writing()
        last.run_id = self.run.run_id
        last.seq = self.last_seq + 1
        pending = [(e.seq, e.SerializeToString()) for e in self.events[self._persisted :]]
        finished = await self._store.finish(
            self.run.run_id, outcome, [*pending, (last.seq, last.SerializeToString())], hand_offs=hand_offs
        )
        metrics.run_events_written_total.inc(len(pending) + 1)
        self._closed = False
        self._append(last)
        self._closed = True
        return finished

    def end_locally(self, last: agent_pb2.ChatEvent) -> None:
        """Ends the stream of the followers here without a record (the database is gone;
        another replica will fail the run as lost once its lease runs out)."""
        self._closed = False
        self._append(last)
        self._closed = True

    async def pause(
        self,
        store_pause: Callable[
            [Callable[[list[InterruptRow]], list[tuple[int, bytes]]]], Awaitable[list[InterruptRow] | None]
        ],
        present: Callable[[InterruptRow, bool], agent_pb2.ChatEvent],
    ) -> list[InterruptRow] | None:
        """Pauses the run: the interrupts and the events presenting them are stored in one
        transaction (by `store_pause`), then shown to local followers."""
        self._stop_writing()
        base = self.last_seq
        presented: list[agent_pb2.ChatEvent] = []

        def events(rows: list[InterruptRow]) -> list[tuple[int, bytes]]:
            presented.clear()
            for index, row in enumerate(rows):
                event = present(row, index == len(rows) - 1)
                event.run_id, event.seq = self.run.run_id, base + 1 + index
                presented.append(event)
            pending = [(e.seq, e.SerializeToString()) for e in self.events[self._persisted :]]
            return [*pending, *((e.seq, e.SerializeToString()) for e in presented)]

        stored = await store_pause(events)
        if stored is not None:
            self._closed = False
            for event in presented:
                self._append(event)
            self._closed = True
        return stored

    def _stop_writing(self) -> None:
        # What the writer has not stored yet goes with the end (or pause) statement.
        self._closed = True
        self._writer.forget(self)

    async def follow(self, after_seq: int) -> AsyncIterator[agent_pb2.ChatEvent]:
        """Events after `after_seq` from memory, then live, until the last one."""
        index = max(0, after_seq - self._first_seq + 1)
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                yield event
                if is_terminal(event):
                    return
            await self._wakeup.wait()


class RunNotifier:
    """The replica's LISTEN connection: followers wait on it, cancel requests arrive on it."""

    def __init__(
        self, connect: Callable[[], Awaitable[psycopg.AsyncConnection]], on_cancel: Callable[[str, str], None]
    ) -> None:
        self._connect = connect
        self._on_cancel = on_cancel
        self._waiters: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="run-notifier")

    def waiter(self, run_id: str) -> asyncio.Event:
        """An event set at the next notification about the run (shared by its followers)."""
        event = self._waiters.get(run_id)
        if event is None or event.is_set():
            event = self._waiters[run_id] = asyncio.Event()
        return event

    def wake(self, run_id: str) -> None:
        event = self._waiters.pop(run_id, None)
        if event is not None:
            event.set()

    async def _listen_forever(self) -> None:
        backoff = 0.2
        while True:
            try:
                conn = await self._connect()
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.2
                    async for note in conn.notifies():
                        kind, _, rest = note.payload.partition(":")
                        run_id, _, action = rest.partition(":")
                        if kind == NOTE_EVENTS:
                            self.wake(run_id)
                        elif kind == NOTE_CANCEL:
                            self._on_cancel(run_id, action)
            except (psycopg.Error, OSError) as exc:
                log.warning("run_notifier_reconnecting", error=type(exc).__name__, backoff_s=backoff)
                # Followers poll meanwhile; nobody waits longer than FOLLOW_POLL_S.
                for run_id in list(self._waiters):
                    self.wake(run_id)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class StoredFollow:
    """Where a follower of stored events stands."""

    last_seq: int
    done: bool = False


async def follow_stored(
    store: RunStore, notifier: RunNotifier, run_id: str, position: StoredFollow
) -> AsyncIterator[agent_pb2.ChatEvent]:
    """Stored events after `position.last_seq` until the last one; returns early (with
    `position.done` False) after each wait, so the caller can switch to a local channel."""
    while True:
        waiter = notifier.waiter(run_id)
        rows = await store.events_after(run_id, position.last_seq)
        for index, (seq, data) in enumerate(rows):
            event = agent_pb2.ChatEvent.FromString(data)
            position.last_seq = seq
            yield event
            # A pause ends the stream only while it is the run's latest event: a resumed
            # run's replay goes on past its earlier pauses.
            paused_here = event.WhichOneof("event") == "interrupt" and index == len(rows) - 1
            if (is_terminal(event) and event.WhichOneof("event") != "interrupt") or (
                paused_here and event.interrupt.last and await _still_paused_at(store, run_id, seq)
            ):
                position.done = True
                return
        if rows:
            continue
        run = await store.get(run_id)
        if run is None:
            position.done = True
            return
        if run.ended:
            if position.last_seq < run.last_seq and await store.events_after(run_id, position.last_seq, limit=1):
                continue  # it ended, with its last events, between the read above and this one
            if position.last_seq != run.last_seq:
                # Fewer: its events were pruned after the retention time. More: the follower
                # saw events that a replica never stored before it died. Either way the run
                # record still says how it ended.
                yield ending_event(run, seq=max(run.last_seq, position.last_seq + 1))
            position.done = True
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), FOLLOW_POLL_S)
        return


async def _still_paused_at(store: RunStore, run_id: str, seq: int) -> bool:
    run = await store.get(run_id)
    return run is not None and run.status == "interrupted" and run.last_seq == seq


def ending_event(run: RunRow, *, seq: int) -> agent_pb2.ChatEvent:
    """The last event of an ended run, rebuilt from its record."""
    if run.status == "succeeded":
        event = agent_pb2.ChatEvent(
            completed=agent_pb2.RunCompleted(
                message=agent_pb2.Message(role="assistant", content=run.output),
                model=run.model,
                usage=agent_pb2.Usage(
                    prompt_tokens=run.prompt_tokens,
                    completion_tokens=run.completion_tokens,
                    total_tokens=run.prompt_tokens + run.completion_tokens,
                ),
            )
        )
    else:
        event = agent_pb2.ChatEvent(
            error=agent_pb2.RunError(code=run.error_code, message=run.error_message, reason=run.error_reason)
        )
    event.run_id = run.run_id
    event.seq = seq
    return event
