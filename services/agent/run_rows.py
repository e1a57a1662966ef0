"""What the run tables hold, as the rest of the agent sees it: a run, its outcome, the
interrupts that pause it for a person; and the column lists every query selects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

RUN_COLUMNS = (
    "run_id, session_id, user_id, status, input, output, model, prompt_tokens, completion_tokens,"
    " error_code, error_message, error_reason, multitask_strategy, cancel_action, lease_owner, last_seq,"
    " create_time, start_time, end_time"
)
INTERRUPT_COLUMNS = (
    "interrupt_id, run_id, pause, position, kind, tool_call_id, tool_name, arguments_json, arguments_sha256,"
    " question, expires_at, decision, edited_arguments_json, answer, decided_by, decide_time, create_time"
)

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


def interrupt_row(row: dict[str, Any]) -> InterruptRow:
    return InterruptRow(**{**row, "interrupt_id": str(row["interrupt_id"]), "run_id": str(row["run_id"])})


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
    # Only a run's end (RunStore.finish) knows it: whether runs of its session were waiting
    # then. None: not known, look.
    session_has_pending: bool | None = None

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


def run_row(row: dict[str, Any]) -> RunRow:
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
        session_has_pending=row.get("session_has_pending"),
    )


async def fetch_run(pool: AsyncConnectionPool, query: str, params: Any) -> RunRow | None:
    """The run a one-row query returns, or None."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        row = await cur.fetchone()
    return run_row(row) if row else None


async def fetch_runs(pool: AsyncConnectionPool, query: str, params: Any) -> list[RunRow]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return [run_row(row) for row in await cur.fetchall()]
