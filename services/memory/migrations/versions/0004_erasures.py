"""receipts of account erasures

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from runtime.erasure import CREATE_ERASURES

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute(CREATE_ERASURES)


def downgrade() -> None:
    op.execute("DROP TABLE erasures")
