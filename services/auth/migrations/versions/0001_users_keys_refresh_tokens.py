"""users, signing keys, refresh token families

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None

# One statement per execute: asyncpg prepares each one and refuses multi-statement strings.
UPGRADE = [
    """CREATE TABLE users (
        id uuid PRIMARY KEY,
        email text NOT NULL UNIQUE,
        password_hash text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE signing_keys (
        kid text PRIMARY KEY,
        algorithm text NOT NULL,
        sealed_private_key bytea NOT NULL,
        public_jwk jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        retired_at timestamptz
    )""",
    """CREATE TABLE refresh_families (
        id uuid PRIMARY KEY,
        user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked_at timestamptz,
        revoked_reason text
    )""",
    """CREATE TABLE refresh_tokens (
        token_hash bytea PRIMARY KEY,
        family_id uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
        user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        used_at timestamptz
    )""",
    "CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id)",
]
DOWNGRADE = ["DROP TABLE refresh_tokens", "DROP TABLE refresh_families", "DROP TABLE signing_keys", "DROP TABLE users"]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
