"""The agent's schema migration, as the migration command runs it (runtime/registry.py names
this function in the agent's `migrate` entry; the runtime imports no service).

The agent has no Alembic history: LangGraph's checkpointer creates its own tables with its
`setup()`, and the run tables come from `run_store.MIGRATIONS`; `Checkpoints.open` brings both
to head under one advisory lock, the same path the service takes at start.
"""

from __future__ import annotations

from runtime.database import resolve_database_url
from services.agent.checkpoints import Checkpoints
from services.agent.settings import AgentSettings


async def migrate_schema(settings: AgentSettings) -> None:
    """Brings the `agent` schema to head, then closes the pool it opened for that."""
    checkpoints = await Checkpoints.open(await resolve_database_url(settings), settings)
    await checkpoints.close()
