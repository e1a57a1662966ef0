"""sessions

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None

UPGRADE = [
    """CREATE TABLE sessions (
        id uuid PRIMARY KEY,
        user_id uuid NOT NULL,
        name text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    # Serves the owner-scoped lookups and the newest-first keyset paging.
    "CREATE INDEX sessions_user_created ON sessions (user_id, created_at DESC, id DESC)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE sessions")
