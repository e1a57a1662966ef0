"""The agent's run tables (schema `agent`, beside LangGraph's checkpoint tables) and
every query on them.

A run row is the shared truth about one turn: its status, who executes it (a lease that
the executing replica renews), what it was asked and what it answered. Its events are
rows keyed by (run_id, seq), so any replica can replay them. At most one run per
session is `running` at a time: a partial unique index makes the claim atomic across
replicas, with no lock held for the length of a turn.
"""

# ruff: noqa: S608  (the f-strings only splice RUN_COLUMNS, a constant; values are always bound)
from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.agent import run_schema
from services.agent.outbox import OutboxItem, item_columns
from services.agent.run_event_queries import CHANNEL, NOTE_CANCEL, NOTE_EVENTS, NOTIFY, RunEventQueries
from services.agent.run_interrupt_queries import RunInterruptQueries
from services.agent.run_rows import RUN_COLUMNS, RunOutcome, RunRow, fetch_run, fetch_runs, run_row

LOCK_USER = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
# The checks and the insert in one statement, after the per-user lock: replicas cannot
# overshoot the quota, and a run that would start at once does not jump ahead of runs of
# its session still waiting (a run that just ended may not have handed over yet). One row
# comes back either way: the new run's columns, or NULLs and which check refused it.
INSERT_RUN_CHECKED = (
    "WITH now AS (SELECT clock_timestamp() AS t),"
    " checks AS (SELECT (SELECT count(*) FROM runs WHERE user_id = %(user_id)s"
    " AND status IN ('pending', 'running')) < %(max_active)s AS within_quota,"
    " (%(status)s = 'pending' OR NOT EXISTS (SELECT 1 FROM runs WHERE session_id = %(session_id)s"
    " AND status = 'pending')) AS nothing_waiting),"
    " inserted AS (INSERT INTO runs (run_id, session_id, user_id, status, input, multitask_strategy, lease_owner,"
    " lease_expires_at, start_time, create_time) SELECT %(run_id)s, %(session_id)s, %(user_id)s, %(status)s,"
    " %(input)s, %(strategy)s, %(owner)s, CASE WHEN %(owner)s::text IS NULL THEN NULL"
    " ELSE now.t + make_interval(secs => %(lease_s)s) END,"
    " CASE WHEN %(status)s = 'running' THEN now.t END, now.t FROM now, checks"
    " WHERE checks.within_quota AND checks.nothing_waiting"
    f" RETURNING {RUN_COLUMNS})"
    " SELECT inserted.*, checks.within_quota, checks.nothing_waiting FROM checks LEFT JOIN inserted ON true"
)

GET_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s"
LIST_RUNS_FIRST = (
    f"SELECT {RUN_COLUMNS} FROM runs WHERE session_id = %(session_id)s"
    " ORDER BY create_time DESC, run_id DESC LIMIT %(limit)s"
)
LIST_RUNS_AFTER = (
    f"SELECT {RUN_COLUMNS} FROM runs WHERE session_id = %(session_id)s"
    " AND (create_time, run_id) < (%(create_time)s, %(run_id)s)"
    " ORDER BY create_time DESC, run_id DESC LIMIT %(limit)s"
)
ACTIVE_RUNS_OF_SESSION = (
    f"SELECT {RUN_COLUMNS} FROM runs WHERE session_id = %s AND status IN ('pending', 'running')"
    " ORDER BY create_time, run_id"
)
# The oldest pending run of a session whose runs are all idle, claimed by this replica.
# SKIP LOCKED: two replicas dispatching at once take different runs or none.
CLAIM_NEXT_OF_SESSION = (
    "UPDATE runs SET status = 'running', lease_owner = %(owner)s, start_time = clock_timestamp(),"
    " lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_s)s)"
    " WHERE run_id = (SELECT run_id FROM runs WHERE session_id = %(session_id)s AND status = 'pending'"
    " ORDER BY create_time, run_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
    f" RETURNING {RUN_COLUMNS}"
)
SESSIONS_WITH_PENDING_RUNS = (
    "SELECT DISTINCT p.session_id FROM runs p WHERE p.status = 'pending'"
    " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.session_id = p.session_id AND r.status = 'running') LIMIT %s"
)
RENEW_LEASES = (
    "UPDATE runs SET lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_s)s)"
    " WHERE lease_owner = %(owner)s AND status = 'running' AND run_id = ANY(%(run_ids)s)"
    " RETURNING run_id, cancel_action"
)
EXPIRED_LEASES = (
    "SELECT run_id FROM runs WHERE status = 'running' AND lease_expires_at < clock_timestamp()"
    " ORDER BY lease_expires_at LIMIT %s"
)
# Taking over a lost run is itself a lease: only one replica finalises it.
TAKE_OVER_LOST = (
    "UPDATE runs SET lease_owner = %(owner)s,"
    " lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_s)s)"
    " WHERE run_id = %(run_id)s AND status = 'running' AND lease_expires_at < clock_timestamp()"
    f" RETURNING {RUN_COLUMNS}"
)
REQUEST_CANCEL = (
    "UPDATE runs SET cancel_action = coalesce(cancel_action, %(action)s) WHERE run_id = %(run_id)s"
    " AND status = 'running'"
)
# The run's end in one statement (autocommit: atomic): the outcome, its last events, what it
# owes other services (the outbox) and the followers' wake-up, and whether the session has
# runs waiting (so the replica looks for the next one only then). Nothing is written when
# the run is no longer in `from_statuses`.
FINISH_RUN = (
    "WITH finished AS (UPDATE runs SET status = %(status)s, output = %(output)s, model = %(model)s,"
    " prompt_tokens = %(prompt_tokens)s, completion_tokens = %(completion_tokens)s,"
    " error_code = %(error_code)s, error_message = %(error_message)s, error_reason = %(error_reason)s,"
    " cancel_action = coalesce(cancel_action, %(cancel_action)s), last_seq = greatest(last_seq, %(last_seq)s),"
    " end_time = clock_timestamp(), lease_owner = NULL, lease_expires_at = NULL"
    " WHERE run_id = %(run_id)s AND status = ANY(%(from_statuses)s)"
    f" RETURNING {RUN_COLUMNS}),"
    " stored AS (INSERT INTO run_events (run_id, seq, event) SELECT f.run_id, t.s, t.e FROM finished f,"
    " unnest(%(seqs)s::bigint[], %(events)s::bytea[]) AS t(s, e) ON CONFLICT DO NOTHING),"
    " owed AS (INSERT INTO outbox (kind, user_id, payload, trace_context) SELECT o.k, o.u, o.p, o.c"
    " FROM finished f, unnest(%(kinds)s::text[], %(users)s::uuid[], %(payloads)s::bytea[], %(contexts)s::text[])"
    " WITH ORDINALITY AS o(k, u, p, c, n) ORDER BY o.n)"
    " SELECT finished.*, pg_notify(%(channel)s, %(note)s)::text AS notified,"
    " EXISTS (SELECT 1 FROM runs w WHERE w.session_id = finished.session_id AND w.status = 'pending')"
    " AS session_has_pending FROM finished"
)
DELETE_SESSION_RUNS = "DELETE FROM runs WHERE session_id = %s"


class SessionBusy(Exception):
    """Another run of the session holds the running slot."""


class RunStore(RunEventQueries, RunInterruptQueries):
    """Every query on the run tables: the runs' own lifecycle here, their events and
    interrupts in the inherited query sets."""

    def __init__(self, pool: AsyncConnectionPool, *, lease_s: float) -> None:
        self._pool = pool
        self._lease_s = lease_s

    async def migrate(self) -> None:
        """Applies the migrations this database has not seen (the caller holds the setup lock)."""
        await run_schema.migrate(self._pool)

    async def _one(self, query: str, params: Any) -> RunRow | None:
        return await fetch_run(self._pool, query, params)

    async def _all(self, query: str, params: Any) -> list[RunRow]:
        return await fetch_runs(self._pool, query, params)

    async def insert(
        self,
        *,
        session_id: str,
        user_id: str,
        content: str,
        strategy: str,
        owner: str | None,
        max_active_per_user: int,
    ) -> RunRow | None:
        """A new run, `running` and leased to `owner`, or `pending` when `owner` is None.

        None when the user already has `max_active_per_user` runs pending or running (the
        count and the insert are serialised per user, so replicas cannot overshoot).
        Raises SessionBusy when `owner` is set and the session already has a running run,
        or runs waiting for their turn."""
        params = {
            "run_id": uuid.uuid4(),
            "session_id": uuid.UUID(session_id),
            "user_id": uuid.UUID(user_id),
            "status": "running" if owner else "pending",
            "input": content,
            "strategy": strategy,
            "owner": owner,
            "lease_s": self._lease_s,
            "max_active": max_active_per_user,
        }
        # Pipelined: the lock, the insert and the commit go out together (one wait, not four).
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            try:
                async with conn.pipeline(), conn.transaction():
                    await conn.execute(LOCK_USER, (f"agent-runs:{user_id}",))
                    await cur.execute(INSERT_RUN_CHECKED, params)
            except pg_errors.UniqueViolation:
                raise SessionBusy(session_id) from None
            row = await cur.fetchone()
        assert row is not None  # the checks' row always comes back
        if not row["within_quota"]:
            return None
        if not row["nothing_waiting"]:
            raise SessionBusy(session_id)
        return run_row(row)

    async def get(self, run_id: str) -> RunRow | None:
        return await self._one(GET_RUN, (uuid.UUID(run_id),))

    async def list(self, session_id: str, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[RunRow]:
        params: dict[str, Any] = {"session_id": uuid.UUID(session_id), "limit": limit}
        if after is None:
            return await self._all(LIST_RUNS_FIRST, params)
        params.update(create_time=after[0], run_id=after[1])
        return await self._all(LIST_RUNS_AFTER, params)

    async def active_in_session(self, session_id: str) -> list[RunRow]:
        return await self._all(ACTIVE_RUNS_OF_SESSION, (uuid.UUID(session_id),))

    async def claim_next(self, session_id: str, owner: str) -> RunRow | None:
        params = {"session_id": uuid.UUID(session_id), "owner": owner, "lease_s": self._lease_s}
        try:
            return await self._one(CLAIM_NEXT_OF_SESSION, params)
        except pg_errors.UniqueViolation:
            return None  # another run of the session started meanwhile

    async def sessions_with_pending_runs(self, limit: int) -> list[str]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SESSIONS_WITH_PENDING_RUNS, (limit,))
            return [str(row["session_id"]) for row in await cur.fetchall()]

    async def renew_leases(self, owner: str, run_ids: Sequence[str]) -> dict[str, str | None]:
        """Extends the leases of the runs this replica is executing (only those: a run whose
        execution died, say its end could not be written while the database was down, must
        lose its lease and be failed as lost, not keep its session busy for good); returns
        run_id -> requested cancel action."""
        params = {"owner": owner, "lease_s": self._lease_s, "run_ids": [uuid.UUID(run_id) for run_id in run_ids]}
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(RENEW_LEASES, params)
            return {str(row["run_id"]): row["cancel_action"] for row in await cur.fetchall()}

    async def expired_leases(self, limit: int) -> list[str]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(EXPIRED_LEASES, (limit,))
            return [str(row["run_id"]) for row in await cur.fetchall()]

    async def take_over_lost(self, run_id: str, owner: str) -> RunRow | None:
        return await self._one(TAKE_OVER_LOST, {"run_id": uuid.UUID(run_id), "owner": owner, "lease_s": self._lease_s})

    async def request_cancel(self, run_id: str, action: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(REQUEST_CANCEL, {"run_id": uuid.UUID(run_id), "action": action})
            await conn.execute(NOTIFY, (CHANNEL, f"{NOTE_CANCEL}:{run_id}:{action}"))

    async def cancel_pending(self, run_id: str, outcome: RunOutcome, last_event: bytes) -> RunRow | None:
        """Ends a run that never started, with its one event; None if it is no longer pending."""
        return await self.finish(run_id, outcome, [(1, last_event)], from_statuses=("pending",))

    async def finish(
        self,
        run_id: str,
        outcome: RunOutcome,
        events: Sequence[tuple[int, bytes]],
        *,
        from_statuses: Sequence[str] = ("running",),
        hand_offs: Sequence[OutboxItem] = (),
    ) -> RunRow | None:
        """Records the outcome, the run's remaining events (the last one ends it) and what it
        owes other services (the outbox) atomically; None, and nothing written, when the run
        is no longer in `from_statuses`."""
        params: dict[str, Any] = {
            "run_id": uuid.UUID(run_id),
            "status": outcome.status,
            "output": outcome.output,
            "model": outcome.model,
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
            "error_code": outcome.error_code,
            "error_message": outcome.error_message,
            "error_reason": outcome.error_reason,
            "cancel_action": outcome.cancel_action,
            "last_seq": events[-1][0] if events else 0,
            "from_statuses": list(from_statuses),
        }
        params |= {
            "seqs": [seq for seq, _ in events],
            "events": [event for _, event in events],
            **item_columns(hand_offs),
            "channel": CHANNEL,
            "note": f"{NOTE_EVENTS}:{run_id}",
        }
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(FINISH_RUN, params)
            row = await cur.fetchone()
        return run_row(row) if row is not None else None

    async def delete_session_runs(self, session_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(DELETE_SESSION_RUNS, (uuid.UUID(session_id),))
