"""What a user leaves in the mesh's databases, for the account deletion and export tests:
populating every service with a user's data, and reading it back straight from every schema."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import grpc
import psycopg

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.auth.v1 import auth_pb2
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.users import MeshUser
from tests.support.waiting import eventually

SCHEMAS = ("auth", "sessions", "agent", "memory", "evals")
STORES = ("auth", "sessions", "agent", "memory", "evals")


@dataclass(frozen=True)
class Populated:
    user: MeshUser
    session_ids: list[str]
    run_id: str


async def sql(mesh: Mesh, query: str, params: tuple | dict = ()) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(mesh.env["DATABASE_URL"], autocommit=True) as conn:
        cursor = await conn.execute(query, params)
        return await cursor.fetchall() if cursor.description else []


async def count(mesh: Mesh, query: str, params: tuple | dict = ()) -> int:
    return int((await sql(mesh, query, params))[0][0])


async def memories_of(mesh: Mesh, user: MeshUser) -> list[memory_pb2.Memory]:
    async with grpc.aio.insecure_channel(mesh.addr("memory")) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        listed = await stub.ListMemories(memory_pb2.ListMemoriesRequest(page_size=100), metadata=user.metadata)
    return list(listed.memories)


async def populate(mesh: Mesh, channels: dict[str, grpc.aio.Channel], user: MeshUser) -> Populated:
    """Two sessions, a turn in one (checkpoint, run, events, a memory with its history
    and idempotency key, a trace), then waits until the hand-offs have arrived."""
    sessions = sessions_pb2_grpc.SessionServiceStub(channels["sessions"])
    session_ids = [
        (
            await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name=name), metadata=user.metadata)
        ).session.session_id
        for name in ("talked", "empty")
    ]
    agent = agent_pb2_grpc.AgentServiceStub(channels["agent"])
    turn = await agent.Chat(
        agent_pb2.ChatRequest(
            session_id=session_ids[0], message=agent_pb2.Message(role="user", content="I live in Rome")
        ),
        metadata=user.metadata,
        timeout=60,
    )

    async def delivered() -> None:
        assert any("rome" in m.text.lower() for m in await memories_of(mesh, user))
        assert await count(mesh, "SELECT count(*) FROM evals.traces WHERE trace_id = %s", (turn.run_id,)) == 1
        assert await count(mesh, "SELECT count(*) FROM agent.outbox WHERE user_id = %s", (user.user_id,)) == 0

    await eventually(delivered, timeout_s=60, interval_s=0.5)
    return Populated(user, session_ids, turn.run_id)


async def rows_per_table(mesh: Mesh, user: MeshUser, session_ids: list[str]) -> dict[str, dict[str, int]]:
    """What the receipt must count, read straight from every schema."""
    u, s = user.user_id, session_ids
    key = hashlib.sha256(b"login:" + user.email.encode()).digest()
    queries = {
        "auth": {
            "users": "SELECT count(*) FROM auth.users WHERE id = %(u)s",
            "refresh_tokens": "SELECT count(*) FROM auth.refresh_tokens WHERE user_id = %(u)s",
            "refresh_families": "SELECT count(*) FROM auth.refresh_families WHERE user_id = %(u)s",
            "role_changes": "SELECT count(*) FROM auth.role_changes WHERE user_id = %(u)s",
            "role_changes_made_anonymised": "SELECT count(*) FROM auth.role_changes WHERE actor = 'user:' || %(u)s",
            "login_failures": "SELECT count(*) FROM auth.login_failures WHERE account_key = %(key)s",
            "token_revocations": "SELECT count(*) FROM auth.token_revocations WHERE subject = %(u)s::uuid"
            " OR subject IN (SELECT id FROM auth.refresh_families WHERE user_id = %(u)s)",
        },
        "sessions": {
            "sessions": "SELECT count(*) FROM sessions.sessions WHERE user_id = %(u)s",
            "conversation_clears": "SELECT count(*) FROM sessions.conversation_clears WHERE user_id = %(u)s",
        },
        "agent": {
            "run_events": "SELECT count(*) FROM agent.run_events e JOIN agent.runs r USING (run_id)"
            " WHERE r.user_id = %(u)s",
            "run_interrupts": "SELECT count(*) FROM agent.run_interrupts i JOIN agent.runs r USING (run_id)"
            " WHERE r.user_id = %(u)s",
            "runs": "SELECT count(*) FROM agent.runs WHERE user_id = %(u)s",
            "outbox": "SELECT count(*) FROM agent.outbox WHERE user_id = %(u)s",
            "checkpoint_writes": "SELECT count(*) FROM agent.checkpoint_writes WHERE thread_id = ANY(%(s)s)",
            "checkpoint_blobs": "SELECT count(*) FROM agent.checkpoint_blobs WHERE thread_id = ANY(%(s)s)",
            "checkpoints": "SELECT count(*) FROM agent.checkpoints WHERE thread_id = ANY(%(s)s)",
        },
        "memory": {
            "add_requests": "SELECT count(*) FROM memory.add_requests WHERE user_id = %(u)s",
            "memory_history": "SELECT count(*) FROM memory.memory_history WHERE user_id = %(u)s",
            "memories": "SELECT count(*) FROM memory.memories WHERE user_id = %(u)s",
        },
        "evals": {
            "traces": "SELECT count(*) FROM evals.traces WHERE user_id = %(u)s OR session_id = ANY(%(s)s)",
            "scores": "SELECT count(*) FROM evals.scores c JOIN evals.traces t USING (trace_id)"
            " WHERE t.user_id = %(u)s OR t.session_id = ANY(%(s)s)",
        },
    }
    params = {"u": u, "s": s, "key": key}
    counted: dict[str, dict[str, int]] = {}
    async with await psycopg.AsyncConnection.connect(mesh.env["DATABASE_URL"], autocommit=True) as conn:
        for store, tables in queries.items():
            counted[store] = {}
            for table, query in tables.items():
                row = await (await conn.execute(query, params)).fetchone()
                counted[store][table] = int(row[0]) if row else 0
    return counted


async def tables_holding(mesh: Mesh, needles: list[str]) -> set[tuple[str, str]]:
    """Every (schema, table) of every service with a value containing one of `needles`:
    uuid and text columns (arrays too), json(b) as text, and bytea (checkpoint blobs,
    run events, outbox payloads) byte for byte."""
    columns = await sql(
        mesh,
        "SELECT c.table_schema, c.table_name, c.column_name, c.data_type"
        " FROM information_schema.columns c JOIN information_schema.tables t"
        " ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
        " WHERE c.table_schema = ANY(%s) AND t.table_type = 'BASE TABLE'",
        (list(SCHEMAS),),
    )
    scanned: set[str] = set()
    hits: set[tuple[str, str]] = set()
    async with await psycopg.AsyncConnection.connect(mesh.env["DATABASE_URL"], autocommit=True) as conn:
        for schema, table, column, data_type in columns:
            scanned.add(f"{schema}.{table}")
            ref = f'"{column}"'
            if data_type == "bytea":
                condition = " OR ".join(f"position(convert_to(%s, 'UTF8') in {ref}) > 0" for _ in needles)
            elif data_type in ("uuid", "text", "character varying", "json", "jsonb", "ARRAY"):
                condition = " OR ".join(f"{ref}::text LIKE '%%' || %s || '%%'" for _ in needles)
            else:
                continue
            query = f'SELECT EXISTS (SELECT 1 FROM "{schema}"."{table}" WHERE {condition})'  # noqa: S608 (catalog names)
            row = await (await conn.execute(query, tuple(needles))).fetchone()
            if row and row[0]:
                hits.add((schema, table))
    # The scan covers the tables that hold user data, not a subset by accident.
    for expected in ("agent.checkpoint_blobs", "agent.outbox", "memory.memory_history", "evals.scores"):
        assert expected in scanned, scanned
    return hits


async def deletion_row(mesh: Mesh, deletion_id: str) -> tuple[str, dict, str | None]:
    rows = await sql(mesh, "SELECT state, receipt, user_id FROM auth.account_deletions WHERE id = %s", (deletion_id,))
    state, receipt, user_id = rows[0]
    return state, receipt, (str(user_id) if user_id else None)


def receipt_counts(receipt: auth_pb2.DeletionReceipt) -> dict[str, dict[str, int]]:
    return {store.store: dict(store.counts) for store in receipt.stores if store.done}
