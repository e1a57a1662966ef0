"""sessions expire (AIP-214) and durable conversation clears

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"

UPGRADE = [
    # NULL means never: existing sessions keep living.
    "ALTER TABLE sessions ADD COLUMN expire_time timestamptz",
    # The sweeper's scan: only sessions that can expire are indexed.
    "CREATE INDEX sessions_expire_time ON sessions (expire_time) WHERE expire_time IS NOT NULL",
    # A swept session's conversation lives in the agent service; the clear is recorded in
    # the same transaction that deletes the row and retried until the agent confirms it.
    """CREATE TABLE conversation_clears (
        session_id uuid PRIMARY KEY,
        user_id uuid NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        last_error text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    "CREATE INDEX conversation_clears_due ON conversation_clears (next_attempt_at)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE conversation_clears")
    op.execute("DROP INDEX sessions_expire_time")
    op.execute("ALTER TABLE sessions DROP COLUMN expire_time")
