"""account deletion jobs

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"

UPGRADE = [
    # One row per DeleteAccount: the account itself goes in the transaction that writes
    # the row; the other services' erasures are steps retried by every auth replica
    # (SKIP LOCKED claims, a lease, backoff) until each has confirmed. Once done the row
    # keeps only a keyed hash of the user id (user_key, to answer a repeated request) and
    # the receipt's counts: user_id and session_ids are cleared.
    """CREATE TABLE account_deletions (
        id uuid PRIMARY KEY,
        user_key bytea NOT NULL UNIQUE,
        user_id uuid,
        session_ids uuid[],
        state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
        receipt jsonb NOT NULL DEFAULT '{}',
        revocation_id bigint,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        locked_until timestamptz,
        last_error text NOT NULL DEFAULT '',
        create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
        complete_time timestamptz
    )""",
    "CREATE INDEX account_deletions_due ON account_deletions (next_attempt_at) WHERE state = 'pending'",
    "CREATE INDEX account_deletions_revocation ON account_deletions (revocation_id) WHERE revocation_id IS NOT NULL",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE account_deletions")
