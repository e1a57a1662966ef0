"""runtime/registry.py against the code it describes: the modules run, the settings classes and
their default ports and addresses, the gRPC calls each server's code makes, and the readers
(meshctl, the migration command) taking their lists from it."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from runtime import registry
from runtime.registry import PROCESSES, REPO_ROOT, MeshProcess, grpc_services, process, start_order
from tests.support.k8s import k8s_check

# Address settings a process carries for something other than its server's calls: the evals
# command line (`python -m services.evals.client`) logs in, chats and grades through these.
CLI_ONLY_ADDRS = {"evals": {"sessions", "agent"}}


def settings_class(entry: MeshProcess) -> type[BaseSettings]:
    module_name, class_name = entry.settings_class.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(cls, type) and issubclass(cls, BaseSettings), entry.settings_class
    return cls


def addr_fields(entry: MeshProcess) -> dict[str, str]:
    """Service name -> default address, for every `<service>_addr` field of its settings."""
    fields = settings_class(entry).model_fields
    return {name.removesuffix("_addr"): str(info.default) for name, info in fields.items() if name.endswith("_addr")}


def server_closure(entry: MeshProcess) -> set[Path]:
    """The modules the server loads, within its own package and the runtime: the import
    closure of its `__main__` (a CLI in a subpackage it never imports stays out)."""
    return k8s_check.import_closure(entry.package_dir / "__main__.py", (entry.module, "runtime"))


def dialled_addrs(entry: MeshProcess) -> set[str]:
    """The `*_addr` settings the server's code reads: attribute reads (`settings.memory_addr`)
    and names spelled as strings (`getattr(settings, "memory_addr")`)."""
    fields = addr_fields(entry)
    used: set[str] = set()
    for path in server_closure(entry):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.endswith("_addr"):
                used.add(node.attr.removesuffix("_addr"))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith("_addr"):
                used.add(node.value.removesuffix("_addr"))
    return used & set(fields)


@pytest.mark.parametrize("entry", PROCESSES, ids=lambda entry: entry.name)
def test_each_module_runs_with_python_dash_m(entry: MeshProcess) -> None:
    assert (entry.package_dir / "__main__.py").is_file()
    assert importlib.util.find_spec(f"{entry.module}.__main__") is not None
    importlib.import_module(entry.module)


@pytest.mark.parametrize("entry", PROCESSES, ids=lambda entry: entry.name)
def test_default_ports_are_the_settings_defaults(entry: MeshProcess) -> None:
    fields = settings_class(entry).model_fields
    if entry.kind == "grpc":
        assert (fields["grpc_port"].default, fields["metrics_port"].default) == (entry.port, entry.metrics_port)
    else:
        assert (fields["gateway_port"].default, fields["gateway_metrics_port"].default) == (
            entry.port,
            entry.metrics_port,
        )


@pytest.mark.parametrize("entry", PROCESSES, ids=lambda entry: entry.name)
def test_default_addresses_are_the_registry_ports(entry: MeshProcess) -> None:
    for callee, address in addr_fields(entry).items():
        assert address == f"127.0.0.1:{process(callee).port}", f"{entry.settings_class} {callee}_addr"


@pytest.mark.parametrize("entry", PROCESSES, ids=lambda entry: entry.name)
def test_declared_calls_are_the_addresses_the_server_dials(entry: MeshProcess) -> None:
    """A client added without declaring its edge fails here: either it reads an address
    setting the registry does not list, or its settings gain one nothing declares."""
    fields = set(addr_fields(entry))
    calls = set(entry.calls)
    assert calls <= fields, f"{entry.name} declares calls with no address setting: {sorted(calls - fields)}"
    undeclared = fields - calls - {entry.name} - CLI_ONLY_ADDRS.get(entry.name, set())
    assert not undeclared, f"{entry.settings_class} reads {sorted(undeclared)}_addr: declare the calls"
    if entry.kind == "gateway":
        # It routes by the proto package's service name (GatewaySettings.upstream_address).
        return
    dialled = dialled_addrs(entry) - {entry.name}
    assert dialled == calls, f"{entry.name}'s server dials {sorted(dialled)}, the registry says {sorted(calls)}"


def test_the_scan_sees_the_calls_it_is_trusted_with() -> None:
    """The evals CLI's addresses stay out of the server's closure, and every service reaches
    auth through the runtime (JWKS, revocations, service tokens) except auth itself."""
    evals = process("evals")
    assert {"sessions", "agent"} <= set(addr_fields(evals))
    assert dialled_addrs(evals) == {"auth"}
    assert dialled_addrs(process("memory")) == {"auth"}
    assert REPO_ROOT / "runtime" / "server.py" in server_closure(process("memory"))


def test_every_grpc_package_is_a_registry_service() -> None:
    """The gateway sends `agentmesh.<name>.v1.*` to <NAME>_ADDR: each such package must be a process."""
    packages = set()
    for path in (REPO_ROOT / "agentmesh").glob("*/v1/*_pb2.py"):
        module = importlib.import_module(f"agentmesh.{path.parent.parent.name}.v1.{path.stem}")
        if module.DESCRIPTOR.services_by_name:
            packages.add(path.parent.parent.name)
    assert packages == {entry.name for entry in grpc_services()}
    assert set(process("gateway").calls) == {entry.name for entry in grpc_services()}


def test_start_order_puts_callees_first_except_mutual_pairs() -> None:
    order = [entry.name for entry in start_order()]
    assert order == ["auth", "sessions", "memory", "evals", "agent", "gateway"]
    for entry in start_order():
        for callee in entry.calls:
            if entry.name not in process(callee).calls:
                assert order.index(callee) < order.index(entry.name), (entry.name, callee)


def test_a_longer_call_cycle_has_no_start_order(monkeypatch: pytest.MonkeyPatch) -> None:
    cycle = {"memory": ("auth", "evals"), "evals": ("auth", "sessions"), "sessions": ("auth", "memory")}
    changed = tuple(dataclasses.replace(e, calls=cycle.get(e.name, e.calls)) for e in PROCESSES)
    monkeypatch.setattr(registry, "PROCESSES", changed)
    with pytest.raises(ValueError, match="cycle"):
        start_order()


def test_the_runtime_does_not_import_services() -> None:
    code = (
        "import sys, runtime.registry, runtime.migrate_command;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('services', 'gateway'));"
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_meshctl_takes_processes_ports_and_order_from_the_registry() -> None:
    from meshctl import mesh

    assert [(e.name, e.module, e.port, e.metrics_port) for e in start_order() if e.kind == "grpc"] == mesh.SERVICES
    assert {e.name: f"{e.name.upper()}_ADDR" for e in grpc_services()} == mesh.ADDR_VARS
    assert (process("gateway").port, process("gateway").metrics_port) == (mesh.GATEWAY_PORT, mesh.GATEWAY_METRICS_PORT)
    planned = mesh.Mesh(data_dir=REPO_ROOT / ".data", log_dir=REPO_ROOT / ".data" / "logs")
    planned.plan(database=False)
    ports = dict((what, port) for port, what in planned.planned_ports())
    for entry in PROCESSES:
        assert ports[f"{entry.name} {'gRPC' if entry.kind == 'grpc' else 'HTTP'}"] == entry.port
        assert ports[f"{entry.name} metrics"] == entry.metrics_port
    # No second list of the mesh's modules hides in meshctl.
    for path in (REPO_ROOT / "meshctl").glob("*.py"):
        assert '"services.' not in path.read_text(), path


def test_migrate_command_targets_are_the_registry_schemas() -> None:
    from runtime.migrate_command import TARGETS

    with_schema = [entry for entry in PROCESSES if entry.schema is not None]
    assert set(TARGETS) == {entry.name for entry in with_schema} == {e.name for e in grpc_services()}
    for entry in with_schema:
        target = TARGETS[entry.name]
        assert (target.settings_class, target.schema) == (entry.settings_class, entry.schema)
        if entry.name != "agent":  # LangGraph creates the agent's tables
            assert (target.migrations / "env.py").is_file(), target.migrations
