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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import errors as pg_errors
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from runtime.erasure import CREATE_ERASURES
from services.agent.outbox import OutboxItem, write_items

# Migrations as an ordered list: entry i brings the schema to version i + 1.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS runs (
            run_id uuid PRIMARY KEY,
            session_id uuid NOT NULL,
            user_id uuid NOT NULL,
            status text NOT NULL,
            input text NOT NULL,
            output text NOT NULL DEFAULT '',
            model text NOT NULL DEFAULT '',
            prompt_tokens integer NOT NULL DEFAULT 0,
            completion_tokens integer NOT NULL DEFAULT 0,
            error_code integer NOT NULL DEFAULT 0,
            error_message text NOT NULL DEFAULT '',
            error_reason text NOT NULL DEFAULT '',
            multitask_strategy text NOT NULL,
            cancel_action text,
            lease_owner text,
            lease_expires_at timestamptz,
            last_seq bigint NOT NULL DEFAULT 0,
            create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
            start_time timestamptz,
            end_time timestamptz
        )""",
        "CREATE INDEX IF NOT EXISTS runs_by_session ON runs (session_id, create_time DESC, run_id DESC)",
        # The session mutex: two replicas cannot both mark a run of one session running.
        "CREATE UNIQUE INDEX IF NOT EXISTS runs_one_running_per_session ON runs (session_id) WHERE status = 'running'",
        "CREATE INDEX IF NOT EXISTS runs_active_by_user ON runs (user_id) WHERE status IN ('pending', 'running')",
        "CREATE INDEX IF NOT EXISTS runs_pending ON runs (create_time) WHERE status = 'pending'",
        "CREATE INDEX IF NOT EXISTS runs_ended ON runs (end_time) WHERE end_time IS NOT NULL",
        """CREATE TABLE IF NOT EXISTS run_events (
            run_id uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            seq bigint NOT NULL,
            event bytea NOT NULL,
            PRIMARY KEY (run_id, seq)
        )""",
    ],
    [
        """CREATE TABLE IF NOT EXISTS outbox (
            id bigserial PRIMARY KEY,
            kind text NOT NULL,
            user_id uuid NOT NULL,
            payload bytea NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            locked_until timestamptz,
            last_error text,
            dead_at timestamptz,
            trace_context text NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )""",
        "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE dead_at IS NULL",
    ],
    [
        # A run paused for a person holds its session like a running one.
        "DROP INDEX IF EXISTS runs_one_running_per_session",
        "CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active_per_session ON runs (session_id)"
        " WHERE status IN ('running', 'interrupted')",
        """CREATE TABLE IF NOT EXISTS run_interrupts (
            interrupt_id uuid PRIMARY KEY,
            run_id uuid NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            pause integer NOT NULL,
            position integer NOT NULL,
            kind text NOT NULL,
            tool_call_id text NOT NULL,
            tool_name text NOT NULL,
            arguments_json text NOT NULL,
            arguments_sha256 text NOT NULL,
            question text NOT NULL DEFAULT '',
            expires_at timestamptz NOT NULL,
            decision text,
            edited_arguments_json text NOT NULL DEFAULT '',
            answer text NOT NULL DEFAULT '',
            decided_by text,
            decide_time timestamptz,
            create_time timestamptz NOT NULL DEFAULT clock_timestamp()
        )""",
        "CREATE INDEX IF NOT EXISTS run_interrupts_by_run ON run_interrupts (run_id, pause, position)",
        "CREATE INDEX IF NOT EXISTS run_interrupts_expiring ON run_interrupts (expires_at) WHERE decision IS NULL",
    ],
    # Receipts of account erasures (services.agent.erasure): ids and counts only.
    [CREATE_ERASURES],
]
MIGRATIONS_TABLE = "CREATE TABLE IF NOT EXISTS run_migrations (version integer NOT NULL)"
MIGRATION_VERSION = "SELECT coalesce(max(version), 0) AS version FROM run_migrations"
RECORD_MIGRATION = "INSERT INTO run_migrations (version) VALUES (%s)"

RUN_COLUMNS = (
    "run_id, session_id, user_id, status, input, output, model, prompt_tokens, completion_tokens,"
    " error_code, error_message, error_reason, multitask_strategy, cancel_action, lease_owner, last_seq,"
    " create_time, start_time, end_time"
)
LOCK_USER = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
ACTIVE_RUNS_OF_USER = "SELECT count(*) AS n FROM runs WHERE user_id = %s AND status IN ('pending', 'running')"
INSERT_RUN = (
    "INSERT INTO runs (run_id, session_id, user_id, status, input, multitask_strategy, lease_owner,"
    " lease_expires_at, start_time) VALUES (%(run_id)s, %(session_id)s, %(user_id)s, %(status)s, %(input)s,"
    " %(strategy)s, %(owner)s, CASE WHEN %(owner)s::text IS NULL THEN NULL"
    " ELSE clock_timestamp() + make_interval(secs => %(lease_s)s) END,"
    " CASE WHEN %(status)s = 'running' THEN clock_timestamp() END)"
    f" RETURNING {RUN_COLUMNS}"
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
FINISH_RUN = (
    "UPDATE runs SET status = %(status)s, output = %(output)s, model = %(model)s,"
    " prompt_tokens = %(prompt_tokens)s, completion_tokens = %(completion_tokens)s,"
    " error_code = %(error_code)s, error_message = %(error_message)s, error_reason = %(error_reason)s,"
    " cancel_action = coalesce(cancel_action, %(cancel_action)s), last_seq = greatest(last_seq, %(last_seq)s),"
    " end_time = clock_timestamp(), lease_owner = NULL, lease_expires_at = NULL"
    " WHERE run_id = %(run_id)s AND status = ANY(%(from_statuses)s)"
    f" RETURNING {RUN_COLUMNS}"
)
INSERT_EVENTS = (
    "INSERT INTO run_events (run_id, seq, event) SELECT %(run_id)s, s, e"
    " FROM unnest(%(seqs)s::bigint[], %(events)s::bytea[]) AS t(s, e) ON CONFLICT DO NOTHING"
)
SET_LAST_SEQ = "UPDATE runs SET last_seq = greatest(last_seq, %(seq)s) WHERE run_id = %(run_id)s"
NOTIFY = "SELECT pg_notify(%s, %s)"
EVENTS_AFTER = "SELECT seq, event FROM run_events WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s"
LAST_EVENT = "SELECT seq, event FROM run_events WHERE run_id = %s ORDER BY seq DESC LIMIT 1"
PRUNE_EVENTS = (
    "DELETE FROM run_events WHERE run_id IN (SELECT run_id FROM runs WHERE end_time IS NOT NULL"
    " AND end_time < clock_timestamp() - make_interval(secs => %s) LIMIT 1000)"
)
DELETE_SESSION_RUNS = "DELETE FROM runs WHERE session_id = %s"
PAUSE_RUN = (
    "UPDATE runs SET status = 'interrupted', lease_owner = NULL, lease_expires_at = NULL,"
    " prompt_tokens = prompt_tokens + %(prompt_tokens)s, completion_tokens = completion_tokens + %(completion_tokens)s,"
    " last_seq = greatest(last_seq, %(last_seq)s) WHERE run_id = %(run_id)s AND status = 'running'"
    f" RETURNING {RUN_COLUMNS}"
)
INTERRUPT_COLUMNS = (
    "interrupt_id, run_id, pause, position, kind, tool_call_id, tool_name, arguments_json, arguments_sha256,"
    " question, expires_at, decision, edited_arguments_json, answer, decided_by, decide_time, create_time"
)
NEXT_PAUSE = "SELECT coalesce(max(pause), 0) + 1 AS pause FROM run_interrupts WHERE run_id = %s"
INSERT_INTERRUPT = (
    "INSERT INTO run_interrupts (interrupt_id, run_id, pause, position, kind, tool_call_id, tool_name,"
    " arguments_json, arguments_sha256, question, expires_at) VALUES (%(interrupt_id)s, %(run_id)s, %(pause)s,"
    " %(position)s, %(kind)s, %(tool_call_id)s, %(tool_name)s, %(arguments_json)s, %(arguments_sha256)s,"
    " %(question)s, clock_timestamp() + make_interval(secs => %(ttl_s)s))"
    f" RETURNING {INTERRUPT_COLUMNS}"
)
RUN_INTERRUPTS = f"SELECT {INTERRUPT_COLUMNS} FROM run_interrupts WHERE run_id = %s ORDER BY pause, position"
GET_INTERRUPT = f"SELECT {INTERRUPT_COLUMNS} FROM run_interrupts WHERE interrupt_id = %s"
DECIDE = (
    "UPDATE run_interrupts SET decision = %(decision)s, edited_arguments_json = %(edited)s, answer = %(answer)s,"
    " decided_by = %(by)s, decide_time = clock_timestamp() WHERE interrupt_id = %(interrupt_id)s"
    " AND decision IS NULL AND expires_at > clock_timestamp()"
    f" RETURNING {INTERRUPT_COLUMNS}"
)
EXPIRE_INTERRUPTS = (
    "UPDATE run_interrupts SET decision = 'reject', decided_by = 'system:expired', decide_time = clock_timestamp()"
    " WHERE interrupt_id IN (SELECT interrupt_id FROM run_interrupts WHERE decision IS NULL"
    " AND expires_at <= clock_timestamp() LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING run_id"
)
UNDECIDED_OF_RUN = "SELECT count(*) AS n FROM run_interrupts WHERE run_id = %s AND decision IS NULL"
CLAIM_FOR_RESUME = (
    "UPDATE runs SET status = 'running', lease_owner = %(owner)s,"
    " lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_s)s)"
    " WHERE run_id = %(run_id)s AND status = 'interrupted'"
    " AND NOT EXISTS (SELECT 1 FROM run_interrupts i WHERE i.run_id = %(run_id)s AND i.decision IS NULL)"
    f" RETURNING {RUN_COLUMNS}"
)
INTERRUPTED_RUNS_READY = (
    "SELECT r.run_id FROM runs r WHERE r.status = 'interrupted' AND NOT EXISTS"
    " (SELECT 1 FROM run_interrupts i WHERE i.run_id = r.run_id AND i.decision IS NULL) LIMIT %s"
)
TRY_SWEEP_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('agent:run-events-sweeper', 0)) AS locked"

# One NOTIFY channel for every run: payload `events:<run_id>` or `cancel:<run_id>:<action>`.
CHANNEL = "agent_runs"
NOTE_EVENTS = "events"
NOTE_CANCEL = "cancel"

ACTIVE = frozenset({"pending", "running"})
ENDED = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class InterruptRow:
    interrupt_id: str
    run_id: str
    pause: int
    position: int
    kind: str
    tool_call_id: str
    tool_name: str
    arguments_json: str
    arguments_sha256: str
    question: str
    expires_at: datetime
    decision: str | None
    edited_arguments_json: str
    answer: str
    decided_by: str | None
    decide_time: datetime | None
    create_time: datetime


@dataclass(frozen=True)
class NewInterrupt:
    kind: str
    tool_call_id: str
    tool_name: str
    arguments_json: str
    arguments_sha256: str
    question: str


def _interrupt(row: dict[str, Any]) -> InterruptRow:
    return InterruptRow(**{**row, "interrupt_id": str(row["interrupt_id"]), "run_id": str(row["run_id"])})


class SessionBusy(Exception):
    """Another run of the session holds the running slot."""


class _NotRunning(Exception):
    """Rolls a pause back: the run was not running any more (cancelled meanwhile)."""


@dataclass(frozen=True)
class RunRow:
    run_id: str
    session_id: str
    user_id: str
    status: str
    input: str
    output: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    error_code: int
    error_message: str
    error_reason: str
    multitask_strategy: str
    cancel_action: str | None
    lease_owner: str | None
    last_seq: int
    create_time: datetime
    start_time: datetime | None
    end_time: datetime | None

    @property
    def ended(self) -> bool:
        return self.status in ENDED


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run records."""

    status: str
    output: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_code: int = 0
    error_message: str = ""
    error_reason: str = ""
    cancel_action: str | None = None


def _run(row: dict[str, Any]) -> RunRow:
    return RunRow(
        run_id=str(row["run_id"]),
        session_id=str(row["session_id"]),
        user_id=str(row["user_id"]),
        status=row["status"],
        input=row["input"],
        output=row["output"],
        model=row["model"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        error_reason=row["error_reason"],
        multitask_strategy=row["multitask_strategy"],
        cancel_action=row["cancel_action"],
        lease_owner=row["lease_owner"],
        last_seq=int(row["last_seq"]),
        create_time=row["create_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
    )


class RunStore:
    def __init__(self, pool: AsyncConnectionPool, *, lease_s: float) -> None:
        self._pool = pool
        self._lease_s = lease_s

    async def migrate(self) -> None:
        """Applies the migrations this database has not seen (the caller holds the setup lock)."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(MIGRATIONS_TABLE)
            await cur.execute(MIGRATION_VERSION)
            row = await cur.fetchone()
            current = int(row["version"]) if row else 0
            for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):
                async with conn.transaction():
                    for statement in statements:
                        await cur.execute(statement)
                    await cur.execute(RECORD_MIGRATION, (version,))

    async def _one(self, query: str, params: Any) -> RunRow | None:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
        return _run(row) if row else None

    async def _all(self, query: str, params: Any) -> list[RunRow]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return [_run(row) for row in await cur.fetchall()]

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
        Raises SessionBusy when `owner` is set and the session already has a running run."""
        params = {
            "run_id": uuid.uuid4(),
            "session_id": uuid.UUID(session_id),
            "user_id": uuid.UUID(user_id),
            "status": "running" if owner else "pending",
            "input": content,
            "strategy": strategy,
            "owner": owner,
            "lease_s": self._lease_s,
        }
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(LOCK_USER, (f"agent-runs:{user_id}",))
            await cur.execute(ACTIVE_RUNS_OF_USER, (params["user_id"],))
            counted = await cur.fetchone()
            if counted is not None and counted["n"] >= max_active_per_user:
                return None
            try:
                async with conn.transaction():
                    await cur.execute(INSERT_RUN, params)
            except pg_errors.UniqueViolation:
                raise SessionBusy(session_id) from None
            row = await cur.fetchone()
        assert row is not None
        return _run(row)

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
        owes other services (the outbox) in one transaction; None, and nothing written, when
        the run is no longer in `from_statuses`."""
        run = uuid.UUID(run_id)
        params = {
            "run_id": run,
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
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(FINISH_RUN, params)
            row = await cur.fetchone()
            if row is None:
                return None
            if events:
                await cur.execute(
                    INSERT_EVENTS, {"run_id": run, "seqs": [s for s, _ in events], "events": [e for _, e in events]}
                )
            await write_items(cur, list(hand_offs))
            await cur.execute(NOTIFY, (CHANNEL, f"{NOTE_EVENTS}:{run_id}"))
        return _run(row)

    async def append_events(self, run_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        """Stores a batch of events and wakes every replica's followers, in one transaction."""
        if not events:
            return
        run = uuid.UUID(run_id)
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                INSERT_EVENTS, {"run_id": run, "seqs": [s for s, _ in events], "events": [e for _, e in events]}
            )
            await conn.execute(SET_LAST_SEQ, {"run_id": run, "seq": events[-1][0]})
            await conn.execute(NOTIFY, (CHANNEL, f"{NOTE_EVENTS}:{run_id}"))

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

    async def pause(
        self,
        run_id: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        interrupts: Sequence[NewInterrupt],
        ttl_s: float,
        events: Callable[[list[InterruptRow]], Sequence[tuple[int, bytes]]],
    ) -> list[InterruptRow] | None:
        """Pauses the run for a person: its interrupts and the events presenting them (built
        by `events` from the stored rows) in one transaction; None if it was not running."""
        run = uuid.UUID(run_id)
        try:
            async with self._pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(NEXT_PAUSE, (run,))
                pause_row = await cur.fetchone()
                pause = int(pause_row["pause"]) if pause_row else 1
                stored = []
                for position, item in enumerate(interrupts):
                    await cur.execute(
                        INSERT_INTERRUPT,
                        {
                            "interrupt_id": uuid.uuid4(),
                            "run_id": run,
                            "pause": pause,
                            "position": position,
                            "kind": item.kind,
                            "tool_call_id": item.tool_call_id,
                            "tool_name": item.tool_name,
                            "arguments_json": item.arguments_json,
                            "arguments_sha256": item.arguments_sha256,
                            "question": item.question,
                            "ttl_s": ttl_s,
                        },
                    )
                    row = await cur.fetchone()
                    assert row is not None
                    stored.append(_interrupt(row))
                presented = list(events(stored))
                params = {
                    "run_id": run,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "last_seq": presented[-1][0] if presented else 0,
                }
                await cur.execute(PAUSE_RUN, params)
                if await cur.fetchone() is None:
                    raise _NotRunning
                await cur.execute(
                    INSERT_EVENTS,
                    {"run_id": run, "seqs": [s for s, _ in presented], "events": [e for _, e in presented]},
                )
                await cur.execute(NOTIFY, (CHANNEL, f"{NOTE_EVENTS}:{run_id}"))

        except _NotRunning:
            return None
        return stored

    async def interrupts(self, run_id: str) -> list[InterruptRow]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(RUN_INTERRUPTS, (uuid.UUID(run_id),))
            return [_interrupt(row) for row in await cur.fetchall()]

    async def get_interrupt(self, interrupt_id: str) -> InterruptRow | None:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(GET_INTERRUPT, (uuid.UUID(interrupt_id),))
            row = await cur.fetchone()
        return _interrupt(row) if row else None

    async def decide(
        self, interrupt_id: str, *, decision: str, edited_arguments_json: str, answer: str, decided_by: str
    ) -> InterruptRow | None:
        """Records a decision on a pending, unexpired interrupt; None when it is not one."""
        params = {
            "interrupt_id": uuid.UUID(interrupt_id),
            "decision": decision,
            "edited": edited_arguments_json,
            "answer": answer,
            "by": decided_by,
        }
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(DECIDE, params)
            row = await cur.fetchone()
        return _interrupt(row) if row else None

    async def expire_interrupts(self, limit: int) -> set[str]:
        """Resolves interrupts past their expiry as REJECT; returns the runs concerned."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(EXPIRE_INTERRUPTS, (limit,))
            return {str(row["run_id"]) for row in await cur.fetchall()}

    async def claim_for_resume(self, run_id: str, owner: str) -> RunRow | None:
        """The paused run, now running here, when every one of its interrupts is decided."""
        params = {"run_id": uuid.UUID(run_id), "owner": owner, "lease_s": self._lease_s}
        return await self._one(CLAIM_FOR_RESUME, params)

    async def interrupted_runs_ready(self, limit: int) -> list[str]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(INTERRUPTED_RUNS_READY, (limit,))
            return [str(row["run_id"]) for row in await cur.fetchall()]

    async def delete_session_runs(self, session_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(DELETE_SESSION_RUNS, (uuid.UUID(session_id),))
