"""The agent's checkpointer on a pool: unrelated conversations' checkpoint queries run at
the same time (the upstream saver's process-wide lock is replaced through its public `lock`
attribute), and concurrent turns through it each keep their own state."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from meshctl.mesh import Mesh
from services.agent.checkpoints import Checkpoints, pooled_saver


class CountingPool(AsyncConnectionPool):
    """Records how many connections are in use at once."""

    active = 0
    peak = 0

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator:  # type: ignore[override]
        async with super().connection(timeout) as conn:
            CountingPool.active += 1
            CountingPool.peak = max(CountingPool.peak, CountingPool.active)
            try:
                yield conn
            finally:
                CountingPool.active -= 1


class Counter(TypedDict):
    count: int


async def _step(state: Counter) -> dict[str, int]:
    await asyncio.sleep(0)
    return {"count": state.get("count", 0) + 1}


async def _open_pool(
    kind: type[AsyncConnectionPool], mesh: Mesh, *, min_size: int, max_size: int
) -> AsyncConnectionPool:
    """A pool like the agent's own: autocommit, dict rows, the agent schema."""
    pool = kind(
        mesh.env["DATABASE_URL"],
        min_size=min_size,
        max_size=max_size,
        kwargs={
            "autocommit": True,
            "prepare_threshold": None,
            "row_factory": dict_row,
            "options": "-c search_path=agent",
        },
        open=False,
    )
    await pool.open(wait=True)
    return pool


async def test_concurrent_turns_through_the_saver_overlap_and_keep_their_own_state(mesh: Mesh) -> None:
    pool = await _open_pool(CountingPool, mesh, min_size=4, max_size=8)
    try:
        saver = pooled_saver(pool)
        builder = StateGraph(Counter)
        builder.add_node("step", _step)
        builder.add_edge(START, "step")
        builder.add_edge("step", END)
        graph = builder.compile(checkpointer=saver)
        threads = [f"checkpointer-test-{uuid.uuid4()}" for _ in range(16)]
        CountingPool.peak = 0

        for _ in range(3):
            await asyncio.gather(
                *(graph.ainvoke({}, {"configurable": {"thread_id": thread}}, durability="exit") for thread in threads)
            )

        states = await asyncio.gather(*(graph.aget_state({"configurable": {"thread_id": t}}) for t in threads))
        assert [state.values["count"] for state in states] == [3] * len(threads)
        assert CountingPool.peak > 1, "checkpoint queries ran one at a time"
        await saver.aprune(threads, strategy="keep_latest")
        async with pool.connection() as conn:
            row = await (
                await conn.execute("SELECT count(*) AS n FROM checkpoints WHERE thread_id = ANY(%s)", (threads,))
            ).fetchone()
        assert row is not None and row["n"] == len(threads)  # one checkpoint left per thread
        await saver.adelete_thread(threads[0])
    finally:
        await pool.close()


class Conversation(TypedDict):
    count: int
    notes: list[str]


async def _note(state: Conversation) -> dict[str, object]:
    count = state.get("count", 0) + 1
    return {"count": count, "notes": [*state.get("notes", []), f"turn {count}"]}


async def _table_counts(pool: AsyncConnectionPool, thread: str) -> dict[str, int]:
    counts = {}
    async with pool.connection() as conn:
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            query = f"SELECT count(*) AS n FROM {table} WHERE thread_id = %s"  # noqa: S608 (table names are ours)
            row = await (await conn.execute(query, (thread,))).fetchone()
            counts[table] = row["n"] if row else 0
    return counts


async def test_pruning_after_a_turn_leaves_what_the_librarys_keep_latest_leaves(mesh: Mesh) -> None:
    """The per-turn prune (one statement) against the library's keep_latest on twin threads
    with the same history: the same rows are left, and the conversation goes on from them."""
    pool = await _open_pool(AsyncConnectionPool, mesh, min_size=1, max_size=4)
    try:
        saver = pooled_saver(pool)
        checkpoints = Checkpoints(pool, saver)
        builder = StateGraph(Conversation)
        builder.add_node("note", _note)
        builder.add_edge(START, "note")
        builder.add_edge("note", END)
        graph = builder.compile(checkpointer=saver)
        ours, theirs = (f"prune-test-{uuid.uuid4()}" for _ in range(2))
        for thread in (ours, theirs):
            for _ in range(4):
                await graph.ainvoke({}, {"configurable": {"thread_id": thread}}, durability="exit")
        before = await _table_counts(pool, ours)
        assert before["checkpoints"] == 4

        await checkpoints.prune(ours)
        await saver.aprune([theirs], strategy="keep_latest")

        left = await _table_counts(pool, ours)
        assert left == await _table_counts(pool, theirs)
        assert left["checkpoints"] == 1 and left["checkpoint_blobs"] < before["checkpoint_blobs"]
        # Nothing more for the library to prune, and the state is whole.
        await saver.aprune([ours], strategy="keep_latest")
        assert await _table_counts(pool, ours) == left
        state = await graph.aget_state({"configurable": {"thread_id": ours}})
        assert state.values == {"count": 4, "notes": ["turn 1", "turn 2", "turn 3", "turn 4"]}
        await graph.ainvoke({}, {"configurable": {"thread_id": ours}}, durability="exit")
        state = await graph.aget_state({"configurable": {"thread_id": ours}})
        assert state.values["notes"][-1] == "turn 5"
        await saver.adelete_thread(ours)
        await saver.adelete_thread(theirs)
    finally:
        await pool.close()
