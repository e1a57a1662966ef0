"""The migration Jobs' command: brings each service's schema to head on a fresh
database, and is a no-op the second time."""

from __future__ import annotations

import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from meshctl.mesh import Mesh
from meshctl.processes import ROOT

SERVICES = ["auth", "sessions", "memory", "evals", "agent"]
EXPECTED_TABLES = {
    "auth": {"users", "signing_keys", "refresh_tokens", "refresh_families"},
    "sessions": {"sessions"},
    "memory": {"memories"},
    "agent": {"checkpoints", "checkpoint_writes", "checkpoint_blobs"},
}


@pytest.fixture
def fresh_database(mesh: Mesh):
    name = f"migrate_{uuid.uuid4().hex[:10]}"
    admin_url = mesh.env["DATABASE_URL"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def migrate(mesh: Mesh, database_url: str, service: str) -> subprocess.CompletedProcess[str]:
    env = {**mesh.env, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "runtime.migrate_command", service],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_each_service_migrates_a_fresh_database_and_again_idempotently(mesh: Mesh, fresh_database: str) -> None:
    for service in SERVICES:
        for _ in range(2):
            result = migrate(mesh, fresh_database, service)
            assert result.returncode == 0, result.stderr[-2000:]
            assert f"AGENTMESH_MIGRATED service={service} schema={service}" in result.stdout
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = ANY(%s)", (SERVICES,)
        ).fetchall()
    tables: dict[str, set[str]] = {}
    for schema, table in rows:
        tables.setdefault(schema, set()).add(table)
    for schema, expected in EXPECTED_TABLES.items():
        assert expected <= tables.get(schema, set()), (schema, tables.get(schema))
    assert tables.get("evals"), "the evals schema has no tables"


def test_an_unknown_service_is_refused(mesh: Mesh) -> None:
    result = migrate(mesh, mesh.env["DATABASE_URL"], "billing")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
