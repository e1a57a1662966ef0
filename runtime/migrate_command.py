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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.entrypoint import exit_on_configuration_error
from runtime.registry import PROCESSES
from runtime.settings import CommonSettings, load_settings


@dataclass(frozen=True)
class MigrationTarget:
    settings_class: str
    schema: str
    migrations: Path

    def load_settings(self) -> CommonSettings:
        module_name, class_name = self.settings_class.rsplit(":", 1)
        cls = getattr(importlib.import_module(module_name), class_name)
        if not (isinstance(cls, type) and issubclass(cls, CommonSettings)):
            raise TypeError(f"{self.settings_class} (runtime/registry.py) is not a CommonSettings subclass")
        # The Job exists to migrate, whatever the Deployment's DB_MIGRATE_ON_START says.
        return load_settings(cls, db_migrate_on_start=True)


# Every process of the registry that owns a schema (the gateway has none).
TARGETS = {
    entry.name: MigrationTarget(entry.settings_class, entry.schema, entry.migrations_dir)
    for entry in PROCESSES
    if entry.schema is not None
}


async def migrate_service(service: str) -> None:
    """Brings `service`'s schema to head, then closes every connection it opened."""
    target = TARGETS[service]
    settings = target.load_settings()
    # LangGraph's checkpointer owns the agent's tables (its own setup(), no Alembic).
    if service == "agent":
        from runtime.database import resolve_database_url
        from services.agent.checkpoints import Checkpoints

        checkpoints = await Checkpoints.open(await resolve_database_url(settings), settings)  # type: ignore[arg-type]
        await checkpoints.close()
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
