"""The run tables' schema (`agent`, beside LangGraph's checkpoint tables) and how a
database is brought up to date: numbered migrations, each applied once, in order."""

from __future__ import annotations

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from runtime.erasure import CREATE_ERASURES

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


async def migrate(pool: AsyncConnectionPool) -> None:
    """Applies the migrations this database has not seen (the caller holds the setup lock)."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(MIGRATIONS_TABLE)
        await cur.execute(MIGRATION_VERSION)
        row = await cur.fetchone()
        current = int(row["version"]) if row else 0
        for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):
            async with conn.transaction():
                for statement in statements:
                    await cur.execute(statement)
                await cur.execute(RECORD_MIGRATION, (version,))
