"""receipts of account erasures

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from runtime.erasure import CREATE_ERASURES

revision = "0003"
down_revision = "0002"

UPGRADE = [
    CREATE_ERASURES,
    # The sessions an erasure removed: the auth job hands them to the agent and evals,
    # and a retried erasure must still name them after the rows are gone.
    "ALTER TABLE erasures ADD COLUMN session_ids uuid[] NOT NULL DEFAULT '{}'",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE erasures")
