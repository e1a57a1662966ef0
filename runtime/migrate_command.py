"""Schema migrations as a one-shot command, for the Kubernetes migration Jobs.

`python -m runtime.migrate_command <service>` brings that service's schema to
head and exits 0 (non-zero with the error otherwise). It is the same code the service
runs at start when DB_MIGRATE_ON_START is true, serialised across replicas and Jobs by
the same advisory lock, so running both is safe. A service's `__main__` may also expose
it as `python -m services.<name> migrate` through `migrate_service(name)`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.entrypoint import exit_on_configuration_error
from runtime.registry import PROCESSES
from runtime.settings import CommonSettings, load_settings

# A schema's own migration (runtime/registry.py `migrate`): called with the process's settings,
# an instance of its registry settings class.
SchemaMigration = Callable[[CommonSettings], Awaitable[None]]


def _import_named(name: str) -> Any:
    """`module:attribute`, as the registry names classes and functions."""
    module_name, attribute = name.rsplit(":", 1)
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class MigrationTarget:
    settings_class: str
    schema: str
    migrations: Path
    # `module:function` for a schema Alembic does not own; None: Alembic, from `migrations`.
    migrate: str | None = None

    def load_settings(self) -> CommonSettings:
        cls = _import_named(self.settings_class)
        if not (isinstance(cls, type) and issubclass(cls, CommonSettings)):
            raise TypeError(f"{self.settings_class} (runtime/registry.py) is not a CommonSettings subclass")
        # The Job exists to migrate, whatever the Deployment's DB_MIGRATE_ON_START says.
        return load_settings(cls, db_migrate_on_start=True)

    def schema_migration(self) -> SchemaMigration | None:
        if self.migrate is None:
            return None
        function = _import_named(self.migrate)
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"{self.migrate} (runtime/registry.py) is not an async function")
        migration: SchemaMigration = function
        return migration


# Every process of the registry that owns a schema (the gateway has none).
TARGETS = {
    entry.name: MigrationTarget(entry.settings_class, entry.schema, entry.migrations_dir, entry.migrate)
    for entry in PROCESSES
    if entry.schema is not None
}


async def migrate_service(service: str) -> None:
    """Brings `service`'s schema to head, then closes every connection it opened."""
    target = TARGETS[service]
    settings = target.load_settings()
    own_migration = target.schema_migration()
    if own_migration is not None:
        await own_migration(settings)
        return
    from runtime.database import open_database

    database = await open_database(settings, schema=target.schema, migrations=target.migrations)
    await database.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.migrate_command", description=__doc__)
    parser.add_argument("service", choices=sorted(TARGETS))
    args = parser.parse_args(argv)
    asyncio.run(migrate_service(args.service))
    print(f"AGENTMESH_MIGRATED service={args.service} schema={TARGETS[args.service].schema}", flush=True)
    return 0


if __name__ == "__main__":
    exit_on_configuration_error(main)
