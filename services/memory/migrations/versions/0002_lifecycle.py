"""memory lifecycle: expire_time, change history, search that skips expired memories

Revision ID: 0002
Revises: 0001
"""

import importlib.util
from pathlib import Path

from alembic import op

from runtime.settings import load_settings
from services.memory.settings import MemorySettings

revision = "0002"
down_revision = "0001"

SEARCH_FUNCTION = """CREATE OR REPLACE FUNCTION memory_search(
    p_user_id uuid, p_query public.vector, p_limit integer, p_min_score double precision,
    p_exact_max_rows integer, p_ef_search integer, p_iterative_scan text, p_max_scan_tuples integer
) RETURNS TABLE (
    id uuid, user_id uuid, text text, session_id uuid,
    created_at timestamptz, updated_at timestamptz, score double precision, expire_time timestamptz
)
LANGUAGE plpgsql VOLATILE
SET search_path = memory, public
SET plan_cache_mode = force_custom_plan
AS $body$
#variable_conflict use_column
DECLARE
    user_rows integer;
BEGIN
    SELECT count(*) INTO user_rows
    FROM (SELECT 1 FROM memories m WHERE m.user_id = p_user_id LIMIT p_exact_max_rows + 1) AS capped;
    IF user_rows <= p_exact_max_rows THEN
        PERFORM set_config('enable_indexscan', 'off', true);
    ELSE
        PERFORM set_config('hnsw.ef_search', p_ef_search::text, true),
                set_config('hnsw.iterative_scan', p_iterative_scan, true),
                set_config('hnsw.max_scan_tuples', p_max_scan_tuples::text, true);
    END IF;
    -- An expired memory is gone for search from its first second, swept or not.
    RETURN QUERY
    WITH nearest AS MATERIALIZED (
        SELECT m.id, m.user_id, m.text, m.session_id, m.created_at, m.updated_at, m.expire_time,
               m.embedding <=> p_query AS distance
        FROM memories m
        WHERE m.user_id = p_user_id AND (m.expire_time IS NULL OR m.expire_time > clock_timestamp())
        ORDER BY m.embedding <=> p_query
        LIMIT p_limit
    )
    SELECT n.id, n.user_id, n.text, n.session_id, n.created_at, n.updated_at, 1 - n.distance, n.expire_time
    FROM nearest n
    WHERE 1 - n.distance >= p_min_score
    ORDER BY n.distance, n.id;
END
$body$"""

UPGRADE = [
    "ALTER TABLE memories ADD COLUMN expire_time timestamptz",
    "CREATE INDEX memories_expire_time ON memories (expire_time) WHERE expire_time IS NOT NULL",
    # ListMemories filtered by the session a fact came from.
    "CREATE INDEX memories_user_session ON memories (user_id, session_id, created_at DESC, id DESC)",
    # Every ADD/UPDATE/DELETE resolution (or UpdateMemory) applied, in the same transaction
    # as the change. Kept after a retraction deletes the memory; erased with the memory by
    # DeleteMemory, DeleteAllMemories and expiry.
    """CREATE TABLE memory_history (
        id uuid PRIMARY KEY,
        memory_id uuid NOT NULL,
        user_id uuid NOT NULL,
        action text NOT NULL CHECK (action IN ('ADD', 'UPDATE', 'DELETE')),
        text text NOT NULL,
        previous_text text NOT NULL DEFAULT '',
        session_id uuid,
        source text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    "CREATE INDEX memory_history_memory ON memory_history (user_id, memory_id, created_at, id)",
    # The return type changes (expire_time), which CREATE OR REPLACE cannot do.
    "DROP FUNCTION memory_search",
    SEARCH_FUNCTION,
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    # Back to the search function of 0001 (its statement list ends with it).
    spec = importlib.util.spec_from_file_location("memory_0001", Path(__file__).with_name("0001_memories.py"))
    assert spec is not None and spec.loader is not None
    first = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(first)
    op.execute("DROP FUNCTION memory_search")
    op.execute(first.upgrade_statements(load_settings(MemorySettings).embedding_dim)[-1])
    op.execute("DROP TABLE memory_history")
    op.execute("DROP INDEX memories_user_session")
    op.execute("DROP INDEX memories_expire_time")
    op.execute("ALTER TABLE memories DROP COLUMN expire_time")
