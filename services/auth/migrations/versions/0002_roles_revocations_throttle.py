"""roles in the database with an audit trail, token revocations, login throttling,
absolute refresh family lifetime, refresh reuse grace

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"

UPGRADE = [
    # Every account has `user`; other roles are granted explicitly, never by registration.
    "ALTER TABLE users ADD COLUMN roles text[] NOT NULL DEFAULT ARRAY['user']::text[]",
    # No foreign key: the audit trail outlives the account it describes.
    """CREATE TABLE role_changes (
        id bigserial PRIMARY KEY,
        user_id uuid NOT NULL,
        actor text NOT NULL,
        changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        old_roles text[] NOT NULL,
        new_roles text[] NOT NULL
    )""",
    "CREATE INDEX role_changes_user ON role_changes (user_id, changed_at)",
    # kind 'family': subject is a refresh family id; kind 'user': subject is a user id and
    # tokens issued before not_before are refused. Rows are useless once every access
    # token they could refuse has expired (expires_at).
    """CREATE TABLE token_revocations (
        id bigserial PRIMARY KEY,
        kind text NOT NULL CHECK (kind IN ('family', 'user')),
        subject uuid NOT NULL,
        not_before timestamptz,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        expires_at timestamptz NOT NULL
    )""",
    "CREATE INDEX token_revocations_created ON token_revocations (created_at)",
    "CREATE INDEX token_revocations_expires ON token_revocations (expires_at)",
    # Keyed by a hash of the normalised email, known account or not, so the table
    # neither reveals which accounts exist nor stores the addresses people mistyped.
    """CREATE TABLE login_failures (
        account_key bytea NOT NULL,
        failed_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    "CREATE INDEX login_failures_key ON login_failures (account_key, failed_at)",
    "ALTER TABLE refresh_families ADD COLUMN absolute_expires_at timestamptz",
    # The pair a rotation returned, sealed (AES-GCM), so a replay within the grace
    # period gets the same pair back; cleared as soon as the successor is spent.
    "ALTER TABLE refresh_tokens ADD COLUMN successor_hash bytea",
    "ALTER TABLE refresh_tokens ADD COLUMN sealed_successor bytea",
    "CREATE INDEX refresh_tokens_successor ON refresh_tokens (successor_hash) WHERE successor_hash IS NOT NULL",
    "CREATE INDEX refresh_families_user ON refresh_families (user_id) WHERE revoked_at IS NULL",
]
DOWNGRADE = [
    "DROP INDEX refresh_families_user",
    "DROP INDEX refresh_tokens_successor",
    "ALTER TABLE refresh_tokens DROP COLUMN sealed_successor",
    "ALTER TABLE refresh_tokens DROP COLUMN successor_hash",
    "ALTER TABLE refresh_families DROP COLUMN absolute_expires_at",
    "DROP TABLE login_failures",
    "DROP TABLE token_revocations",
    "DROP TABLE role_changes",
    "ALTER TABLE users DROP COLUMN roles",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
