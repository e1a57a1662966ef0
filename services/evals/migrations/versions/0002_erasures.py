"""receipts of account erasures

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from runtime.erasure import CREATE_ERASURES

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(CREATE_ERASURES)


def downgrade() -> None:
    op.execute("DROP TABLE erasures")
