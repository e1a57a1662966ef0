"""memories with pgvector

Revision ID: 0001
Revises:
"""

from alembic import op

from runtime.settings import load_settings
from services.memory.settings import MemorySettings

revision = "0001"
down_revision = None


def upgrade_statements(dim: int) -> list[str]:
    return [
        # Extensions belong to the database, not to our schema: other services may use it too.
        "CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public",
        f"""CREATE TABLE memories (
            id uuid PRIMARY KEY,
            user_id uuid NOT NULL,
            text text NOT NULL,
            normalized text NOT NULL,
            embedding public.vector({dim}) NOT NULL,
            session_id uuid,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )""",
        # Exact duplicates cannot exist, even from writers that race past the user lock.
        "CREATE UNIQUE INDEX memories_user_normalized ON memories (user_id, normalized)",
        # Owner-scoped newest-first keyset paging, and the planner's exact path for small users.
        "CREATE INDEX memories_user_created ON memories (user_id, created_at DESC, id DESC)",
        "CREATE INDEX memories_embedding_hnsw ON memories USING hnsw (embedding public.vector_cosine_ops)",
        # One round trip per search: the planner knobs are set transaction-locally by the
        # same statement that runs the query. A user with few memories is searched exactly
        # (their rows through the btree, every distance computed): cheap at that size and
        # immune to HNSW's filtered-recall loss, which is worst when many users store the
        # same fact. Larger users go through HNSW with an iterative scan, so the user filter
        # still fills `limit` rows; relaxed_order can return rows slightly out of order, so
        # the outer query sorts again (pgvector's documented pattern).
        """CREATE FUNCTION memory_search(
            p_user_id uuid, p_query public.vector, p_limit integer, p_min_score double precision,
            p_exact_max_rows integer, p_ef_search integer, p_iterative_scan text, p_max_scan_tuples integer
        ) RETURNS TABLE (
            id uuid, user_id uuid, text text, session_id uuid,
            created_at timestamptz, updated_at timestamptz, score double precision
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
                -- HNSW can only serve index scans, so this leaves the exact path.
                PERFORM set_config('enable_indexscan', 'off', true);
            ELSE
                PERFORM set_config('hnsw.ef_search', p_ef_search::text, true),
                        set_config('hnsw.iterative_scan', p_iterative_scan, true),
                        set_config('hnsw.max_scan_tuples', p_max_scan_tuples::text, true);
            END IF;
            RETURN QUERY
            WITH nearest AS MATERIALIZED (
                SELECT m.id, m.user_id, m.text, m.session_id, m.created_at, m.updated_at,
                       m.embedding <=> p_query AS distance
                FROM memories m
                WHERE m.user_id = p_user_id
                ORDER BY m.embedding <=> p_query
                LIMIT p_limit
            )
            SELECT n.id, n.user_id, n.text, n.session_id, n.created_at, n.updated_at, 1 - n.distance
            FROM nearest n
            WHERE 1 - n.distance >= p_min_score
            ORDER BY n.distance, n.id;
        END
        $body$""",
    ]


def upgrade() -> None:
    # The column's dimension comes from EMBEDDING_DIM at the first migration; the service
    # refuses to start later with a different one (see store.check_embedding_dim).
    dim = load_settings(MemorySettings).embedding_dim
    for statement in upgrade_statements(dim):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION memory_search")
    op.execute("DROP TABLE memories")
