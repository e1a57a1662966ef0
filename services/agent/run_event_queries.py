"""A run's event log: rows keyed by (run_id, seq), so any replica can replay them, and
one NOTIFY channel that wakes every replica's followers when a run has news."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

INSERT_EVENTS = (
    "INSERT INTO run_events (run_id, seq, event) SELECT %(run_id)s, s, e"
    " FROM unnest(%(seqs)s::bigint[], %(events)s::bytea[]) AS t(s, e) ON CONFLICT DO NOTHING"
)
# The events of several runs in one statement (autocommit: atomic), each run's last_seq
# moved on and its followers everywhere woken: the replica's writer runs it once per
# interval for every run executing there (run_event_writer.py).
APPEND_EVENTS_OF_RUNS = (
    "WITH stored AS (INSERT INTO run_events (run_id, seq, event) SELECT r, s, e"
    " FROM unnest(%(runs)s::uuid[], %(seqs)s::bigint[], %(events)s::bytea[]) AS t(r, s, e) ON CONFLICT DO NOTHING),"
    " advanced AS (UPDATE runs SET last_seq = greatest(runs.last_seq, l.s)"
    " FROM unnest(%(last_runs)s::uuid[], %(last_seqs)s::bigint[]) AS l(r, s) WHERE runs.run_id = l.r)"
    " SELECT pg_notify(%(channel)s, %(note_prefix)s || l.r::text) FROM unnest(%(last_runs)s::uuid[]) AS l(r)"
)
NOTIFY = "SELECT pg_notify(%s, %s)"
EVENTS_AFTER = "SELECT seq, event FROM run_events WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s"
LAST_EVENT = "SELECT seq, event FROM run_events WHERE run_id = %s ORDER BY seq DESC LIMIT 1"
PRUNE_EVENTS = (
    "DELETE FROM run_events WHERE run_id IN (SELECT run_id FROM runs WHERE end_time IS NOT NULL"
    " AND end_time < clock_timestamp() - make_interval(secs => %s) LIMIT 1000)"
)
TRY_SWEEP_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('agent:run-events-sweeper', 0)) AS locked"

# One NOTIFY channel for every run: payload `events:<run_id>` or `cancel:<run_id>:<action>`.
CHANNEL = "agent_runs"
NOTE_EVENTS = "events"
NOTE_CANCEL = "cancel"


class RunEventQueries:
    """The run store's queries on `run_events` (RunStore inherits them)."""

    _pool: AsyncConnectionPool

    async def append_events_of_runs(self, rows: Sequence[tuple[str, int, bytes]]) -> None:
        """Stores (run_id, seq, event) rows of any number of runs and wakes their followers."""
        if not rows:
            return
        last: dict[str, int] = {}
        for run_id, seq, _ in rows:
            last[run_id] = max(seq, last.get(run_id, 0))
        # Runs in a stable order, so concurrent multi-run updates (another pass, lease
        # renewal) mostly lock rows in the same order; a deadlock is retried by the caller.
        ordered = sorted(last)
        params = {
            "runs": [uuid.UUID(run_id) for run_id, _, _ in rows],
            "seqs": [seq for _, seq, _ in rows],
            "events": [event for _, _, event in rows],
            "last_runs": [uuid.UUID(run_id) for run_id in ordered],
            "last_seqs": [last[run_id] for run_id in ordered],
            "channel": CHANNEL,
            "note_prefix": f"{NOTE_EVENTS}:",
        }
        async with self._pool.connection() as conn:
            await conn.execute(APPEND_EVENTS_OF_RUNS, params)

    async def events_after(self, run_id: str, after_seq: int, limit: int = 500) -> list[tuple[int, bytes]]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(EVENTS_AFTER, (uuid.UUID(run_id), after_seq, limit))
            return [(int(seq), bytes(event)) for seq, event in await cur.fetchall()]

    async def last_event(self, run_id: str) -> tuple[int, bytes] | None:
        async with self._pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(LAST_EVENT, (uuid.UUID(run_id),))
            row = await cur.fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    async def prune_events(self, ttl_s: float) -> int:
        """Deletes events of runs that ended more than `ttl_s` ago; one replica at a time."""
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(TRY_SWEEP_LOCK)
            locked = await cur.fetchone()
            if not locked or not locked["locked"]:
                return 0
            await cur.execute(PRUNE_EVENTS, (ttl_s,))
            return cur.rowcount
