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
# One statement (autocommit: atomic), not a transaction of three: a batch is written
# every few tens of milliseconds while a run streams, and each round trip counts.
APPEND_EVENTS = (
    "WITH stored AS (INSERT INTO run_events (run_id, seq, event) SELECT %(run_id)s, s, e"
    " FROM unnest(%(seqs)s::bigint[], %(events)s::bytea[]) AS t(s, e) ON CONFLICT DO NOTHING),"
    " advanced AS (UPDATE runs SET last_seq = greatest(last_seq, %(seq)s) WHERE run_id = %(run_id)s)"
    " SELECT pg_notify(%(channel)s, %(note)s)"
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

    async def append_events(self, run_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        """Stores a batch of events and wakes every replica's followers, atomically."""
        if not events:
            return
        params = {
            "run_id": uuid.UUID(run_id),
            "seqs": [seq for seq, _ in events],
            "events": [event for _, event in events],
            "seq": events[-1][0],
            "channel": CHANNEL,
            "note": f"{NOTE_EVENTS}:{run_id}",
        }
        async with self._pool.connection() as conn:
            await conn.execute(APPEND_EVENTS, params)

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
