"""Account deletion, the agent's share (`EraseUserData`, see runtime.erasure).

Everything the agent holds about a user: their runs with the runs' events and
interrupts (cascade), their pending hand-offs in the outbox, and the conversation state
(LangGraph's checkpoint tables, keyed by thread id = session id) of every session their
runs touched plus the sessions the sessions service reported. A run still executing
would write its checkpoint and its hand-offs back after the delete, so each session's
runs are rolled back and awaited first (`Runs.stop_session`), and a hand-off already on
its way to memory or evals is awaited too; either failing in time fails the call
(ABORTED) and the auth job retries it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from runtime.erasure import add_counts
from runtime.errors import Aborted
from runtime.logging import get_logger
from services.agent.runs import Runs

log = get_logger(__name__)

SESSIONS_OF_USER = "SELECT DISTINCT session_id FROM runs WHERE user_id = %s"
OPEN_ERASURE = "INSERT INTO erasures (erasure_id) VALUES (%s) ON CONFLICT DO NOTHING"
LOCK_ERASURE = "SELECT counts FROM erasures WHERE erasure_id = %s FOR UPDATE"
# Children first: their rows would otherwise go by cascade, uncounted.
ERASE_RUN_EVENTS = "DELETE FROM run_events WHERE run_id IN (SELECT run_id FROM runs WHERE user_id = %s)"
ERASE_RUN_INTERRUPTS = "DELETE FROM run_interrupts WHERE run_id IN (SELECT run_id FROM runs WHERE user_id = %s)"
ERASE_RUNS = "DELETE FROM runs WHERE user_id = %s"
ERASE_OUTBOX = "DELETE FROM outbox WHERE user_id = %s"
ERASE_CHECKPOINT_TABLES = {
    table: f"DELETE FROM {table} WHERE thread_id = ANY(%s)"  # noqa: S608 (names are constants)
    for table in ("checkpoint_writes", "checkpoint_blobs", "checkpoints")
}
RECORD_ERASURE = "UPDATE erasures SET counts = %s::jsonb, erased_at = clock_timestamp() WHERE erasure_id = %s"
# The user's hand-offs, locked: no replica can claim one until the erasure commits. One
# claimed earlier may be on its way to memory or evals right now (claims hold no lock):
# the erasure waits for it, or its write could land after those services' erasure.
LOCK_HAND_OFFS = "SELECT locked_until > clock_timestamp() AS in_flight FROM outbox WHERE user_id = %s FOR UPDATE"
HAND_OFF_WAIT_S = 20.0


class HandOffInFlight(Exception):
    """A hand-off of the user is being delivered: erase once it has arrived."""


class UserErasure:
    def __init__(self, pool: AsyncConnectionPool, runs: Runs) -> None:
        self._pool = pool
        self._runs = runs

    async def erase(self, erasure_id: str, user_id: str, session_ids: Sequence[str]) -> dict[str, int]:
        """Erases the user's rows; the running totals of this erasure, per table."""
        owner = uuid.UUID(user_id)
        threads = sorted({*session_ids, *await self._sessions_with_runs(owner)})
        for session_id in threads:
            await self._runs.stop_session(session_id)
        deadline = time.monotonic() + HAND_OFF_WAIT_S
        while True:
            try:
                return await self._erase_rows(erasure_id, owner, threads)
            except HandOffInFlight:
                if time.monotonic() > deadline:
                    raise Aborted(
                        "a hand-off of this user is being delivered; try again", reason="HAND_OFF_IN_FLIGHT"
                    ) from None
                await asyncio.sleep(0.2)

    async def _erase_rows(self, erasure_id: str, owner: uuid.UUID, threads: list[str]) -> dict[str, int]:
        async with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(LOCK_HAND_OFFS, (owner,))
            if any(row["in_flight"] for row in await cur.fetchall()):
                raise HandOffInFlight
            await cur.execute(OPEN_ERASURE, (uuid.UUID(erasure_id),))
            await cur.execute(LOCK_ERASURE, (uuid.UUID(erasure_id),))
            row = await cur.fetchone()
            erased: dict[str, int] = {}
            for table, query in (
                ("run_events", ERASE_RUN_EVENTS),
                ("run_interrupts", ERASE_RUN_INTERRUPTS),
                ("runs", ERASE_RUNS),
                ("outbox", ERASE_OUTBOX),
            ):
                await cur.execute(query, (owner,))
                erased[table] = cur.rowcount
            for table, query in ERASE_CHECKPOINT_TABLES.items():
                await cur.execute(query, (threads,))
                erased[table] = cur.rowcount
            counts = add_counts(row["counts"] if row else None, erased)
            await cur.execute(RECORD_ERASURE, (json.dumps(counts), uuid.UUID(erasure_id)))
        log.info("user_data_erased", erasure_id=erasure_id, sessions=len(threads), **erased)
        return counts

    async def _sessions_with_runs(self, owner: uuid.UUID) -> list[str]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SESSIONS_OF_USER, (owner,))
            return [str(row["session_id"]) for row in await cur.fetchall()]
