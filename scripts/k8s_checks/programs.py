"""What a container runs, as the code sees it: its settings classes, the gRPC services it
serves, the modules its server loads."""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from runtime.registry import PROCESSES, process
from runtime.settings import CommonSettings

from .common import ROOT, CheckFailed


def settings_env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (names and validation aliases)."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    names = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(prefix + name.upper())
    return names


def settings_classes_in(module_name: str, base: type[BaseSettings]) -> list[type[BaseSettings]]:
    module = importlib.import_module(module_name)
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == module_name
    ]


@dataclass
class Program:
    """What a container runs, as the code sees it."""

    name: str  # auth, sessions, ..., gateway, offline_llm
    settings: list[type[BaseSettings]]
    kind: str  # grpc, gateway, migration, http

    @property
    def env_names(self) -> set[str]:
        return set().union(*(settings_env_names(cls) for cls in self.settings))


def module_exists(module: str) -> bool:
    base = ROOT / module.replace(".", "/")
    return (base / "__main__.py").is_file() or base.with_suffix(".py").is_file()


def settings_class(path: str) -> type[BaseSettings]:
    """The class a registry entry names as `module:Class`."""
    module_name, class_name = path.split(":", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, BaseSettings)):
        raise CheckFailed(f"{path} (runtime/registry.py) is not a settings class")
    return cls


def program_for(command: list[str]) -> Program:
    """Maps `python -m X [args]` to the settings the process reads; raises on anything else.
    The mesh's own processes are the ones runtime/registry.py lists."""
    if len(command) < 3 or command[0] != "python" or command[1] != "-m":
        raise CheckFailed(f"command {command} is not `python -m <module>`")
    module, args = command[2], command[3:]
    if not module_exists(module):
        raise CheckFailed(f"command {command}: no module {module} ({module.replace('.', '/')}/__main__.py)")
    from runtime.clients import ChannelSettings
    from runtime.tracing import TracingSettings

    if module == "offline_llm":
        return Program("offline_llm", settings_classes_in("offline_llm.settings", BaseSettings), "http")
    if module == "runtime.migrate_command":
        from runtime.migrate_command import TARGETS

        if len(args) != 1 or args[0] not in TARGETS:
            raise CheckFailed(f"command {command}: migrate_command takes one of {sorted(TARGETS)}")
        return Program(args[0], [settings_class(TARGETS[args[0]].settings_class)], "migration")
    entry = next((entry for entry in PROCESSES if entry.module == module), None)
    if entry is None:
        raise CheckFailed(f"command {command}: unknown program {module} (not in runtime/registry.py)")
    if entry.kind == "gateway":
        gateway_source = "\n".join(path.read_text() for path in entry.package_dir.rglob("*.py"))
        classes: list[type[BaseSettings]] = [settings_class(entry.settings_class), TracingSettings]
        # The gateway verifies tokens with the shared runtime, which loads CommonSettings.
        if "CommonSettings(" in gateway_source:
            classes.append(CommonSettings)
        # Its upstream channels take GRPC_LB_POLICY through lb_policy_options().
        if "lb_policy_options(" in gateway_source:
            classes.append(ChannelSettings)
        return Program(entry.name, classes, "gateway")
    if args not in ([], ["serve"]):
        raise CheckFailed(f"command {command}: a Deployment must run the server, not {args}")
    # serve() installs tracing (TracingSettings) and open_channel() reads ChannelSettings.
    return Program(entry.name, [settings_class(entry.settings_class), TracingSettings, ChannelSettings], "grpc")


def declared_calls(program: Program) -> set[str]:
    """The gRPC services a program calls, as runtime/registry.py declares them (a migration
    Job and the offline LLM call none)."""
    if program.kind not in ("grpc", "gateway"):
        return set()
    return set(process(program.name).calls)


def served_service_names(service: str) -> set[str]:
    """Full gRPC service names the process answers health checks for ('' included)."""
    package = ROOT / "agentmesh" / service / "v1"
    names = {""}
    for path in package.glob("*_pb2.py"):
        module = importlib.import_module(f"agentmesh.{service}.v1.{path.stem}")
        names.update(s.full_name for s in module.DESCRIPTOR.services_by_name.values())
    return names


def _module_path(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_closure(start: Path, prefixes: tuple[str, ...]) -> set[Path]:
    """The repository modules `start` imports, directly or not, among those whose dotted
    names begin with one of `prefixes` (`start` included)."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith(prefixes) and (found := _module_path(name)) is not None:
                    todo.append(found)
    return seen


def server_modules(service: str) -> list[Path]:
    """The modules a running server loads: the import closure of services/<name>/app.py
    within services.<name> and runtime (the CLI's own modules excluded). Until a
    service has app.py, every module of its package."""
    package = ROOT / "services" / service
    start = package / "app.py"
    if not start.is_file():
        return sorted(package.rglob("*.py"))
    return sorted(import_closure(start, (f"services.{service}", "runtime")))
