"""The migration command reaches a schema Alembic does not own (the agent's) only through the
function the registry names, never by importing the service itself."""

from __future__ import annotations

import inspect

import pytest

from runtime.migrate_command import TARGETS, MigrationTarget
from runtime.registry import PROCESSES


def test_each_named_migration_is_an_async_function_and_alembic_covers_the_rest() -> None:
    for entry in PROCESSES:
        if entry.schema is None:
            continue
        migration = TARGETS[entry.name].schema_migration()
        if entry.migrate is None:
            assert migration is None
            assert (entry.migrations_dir / "env.py").is_file(), entry.migrations_dir
        else:
            assert migration is not None and inspect.iscoroutinefunction(migration), entry.migrate
            assert not entry.migrations_dir.is_dir(), f"{entry.name} has both Alembic and {entry.migrate}"
    assert TARGETS["agent"].migrate == "services.agent.schema_migration:migrate_schema"


def test_a_name_that_is_not_an_async_function_is_refused() -> None:
    target = MigrationTarget("services.agent.settings:AgentSettings", "agent", TARGETS["agent"].migrations, "os:getcwd")
    with pytest.raises(TypeError, match="os:getcwd"):
        target.schema_migration()
