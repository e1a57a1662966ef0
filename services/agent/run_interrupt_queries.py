"""Pausing a run for a person and recording what they decide: `run_interrupts` rows,
one per question or tool call awaiting approval, grouped by pause."""

# ruff: noqa: S608  (the f-strings only splice column lists, constants; values are always bound)
from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.agent.run_event_queries import CHANNEL, INSERT_EVENTS, NOTE_EVENTS, NOTIFY
from services.agent.run_rows import (
    INTERRUPT_COLUMNS,
    RUN_COLUMNS,
    InterruptRow,
    NewInterrupt,
    RunRow,
    fetch_run,
    interrupt_row,
)

PAUSE_RUN = (
    "UPDATE runs SET status = 'interrupted', lease_owner = NULL, lease_expires_at = NULL,"
    " prompt_tokens = prompt_tokens + %(prompt_tokens)s, completion_tokens = completion_tokens + %(completion_tokens)s,"
    " last_seq = greatest(last_seq, %(last_seq)s) WHERE run_id = %(run_id)s AND status = 'running'"
    f" RETURNING {RUN_COLUMNS}"
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


class _NotRunning(Exception):
    """Rolls a pause back: the run was not running any more (cancelled meanwhile)."""


class RunInterruptQueries:
    """The run store's queries on `run_interrupts` (RunStore inherits them)."""

    _pool: AsyncConnectionPool
    _lease_s: float

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
                    stored.append(interrupt_row(row))
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
            return [interrupt_row(row) for row in await cur.fetchall()]

    async def get_interrupt(self, interrupt_id: str) -> InterruptRow | None:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(GET_INTERRUPT, (uuid.UUID(interrupt_id),))
            row = await cur.fetchone()
        return interrupt_row(row) if row else None

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
        return interrupt_row(row) if row else None

    async def expire_interrupts(self, limit: int) -> set[str]:
        """Resolves interrupts past their expiry as REJECT; returns the runs concerned."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(EXPIRE_INTERRUPTS, (limit,))
            return {str(row["run_id"]) for row in await cur.fetchall()}

    async def claim_for_resume(self, run_id: str, owner: str) -> RunRow | None:
        """The paused run, now running here, when every one of its interrupts is decided."""
        params = {"run_id": uuid.UUID(run_id), "owner": owner, "lease_s": self._lease_s}
        return await fetch_run(self._pool, CLAIM_FOR_RESUME, params)

    async def interrupted_runs_ready(self, limit: int) -> list[str]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(INTERRUPTED_RUNS_READY, (limit,))
            return [str(row["run_id"]) for row in await cur.fetchall()]
