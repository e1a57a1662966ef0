"""traces and scores

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None

UPGRADE = [
    """CREATE TABLE traces (
        trace_id text PRIMARY KEY,
        session_id text NOT NULL DEFAULT '',
        user_id text NOT NULL DEFAULT '',
        input text NOT NULL,
        output text NOT NULL,
        model text NOT NULL DEFAULT '',
        latency_ms bigint NOT NULL DEFAULT 0,
        prompt_tokens integer NOT NULL DEFAULT 0,
        completion_tokens integer NOT NULL DEFAULT 0,
        tool_calls jsonb NOT NULL DEFAULT '[]',
        created_at timestamptz NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    # Runs pick the oldest recorded traces first, optionally from one session.
    "CREATE INDEX traces_recorded ON traces (recorded_at, trace_id)",
    "CREATE INDEX traces_session ON traces (session_id, recorded_at)",
    "CREATE INDEX traces_user ON traces (user_id)",
    # One row per (trace, metric): the primary key is what makes a pair graded at most
    # once; `pending` rows are a run's claim, `failed` ones are retried by the next run.
    """CREATE TABLE scores (
        trace_id text NOT NULL REFERENCES traces (trace_id) ON DELETE CASCADE,
        metric text NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'ok', 'failed')),
        score double precision,
        reasoning text NOT NULL DEFAULT '',
        error text NOT NULL DEFAULT '',
        judge_model text NOT NULL DEFAULT '',
        attempts integer NOT NULL DEFAULT 0,
        run_id uuid NOT NULL,
        claimed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        graded_at timestamptz,
        PRIMARY KEY (trace_id, metric)
    )""",
    "CREATE INDEX scores_graded ON scores (graded_at DESC, trace_id, metric) WHERE status = 'ok'",
    "CREATE INDEX scores_metric_graded ON scores (metric, graded_at) WHERE status = 'ok'",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE scores")
    op.execute("DROP TABLE traces")
