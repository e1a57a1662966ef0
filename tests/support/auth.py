"""The auth service seen from tests: its operator command, a replica's short limits, and
direct reads of its schema."""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from meshctl.mesh import Mesh

ADMIN_EMAIL = "admin@example.com"

# An auth replica on the same database with limits a test can reach in seconds.
SHORT_LIMITS = {
    "REFRESH_REUSE_GRACE_S": "1",
    "REFRESH_ABSOLUTE_TTL_S": "4",
    "LOGIN_MAX_FAILURES": "3",
    "LOGIN_FAILURE_WINDOW_S": "60",
}


async def run_auth_command(mesh: Mesh, *args: str) -> tuple[int, str, str]:
    """Runs `python -m services.auth <args>` against the mesh's database."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.auth",
        *args,
        env=mesh.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def role_changes(engine: AsyncEngine, user_id: str) -> list[tuple[str, list[str], list[str]]]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT actor, old_roles, new_roles, changed_at FROM role_changes WHERE user_id = :u ORDER BY id"),
                {"u": user_id},
            )
        ).all()
    assert all(row.changed_at is not None for row in rows)
    return [(row.actor, list(row.old_roles), list(row.new_roles)) for row in rows]
