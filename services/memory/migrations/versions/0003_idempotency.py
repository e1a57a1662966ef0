"""AddMemories idempotency keys

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"

UPGRADE = [
    # One row per applied AddMemories that named a key, written in the transaction that
    # applied it: a redelivered call (the agent's outbox retrying after a lost answer)
    # finds it and changes nothing. Swept after MEMORY_IDEMPOTENCY_TTL_S.
    """CREATE TABLE add_requests (
        user_id uuid NOT NULL,
        idempotency_key text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (user_id, idempotency_key)
    )""",
    "CREATE INDEX add_requests_created ON add_requests (created_at)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE add_requests")
