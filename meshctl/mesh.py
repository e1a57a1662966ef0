"""The whole local mesh: embedded Postgres, the offline LLM (unless a real one is
configured), every service that exists in this checkout, and the gateway."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from meshctl.processes import ROOT, ChildProcess, StartError, python_module
from runtime.embedded_pg import embedded_database_url, release_embedded_database
from runtime.registry import grpc_services, process, start_order

# (name, module, default gRPC port, default metrics port) of every gRPC service, in start
# order (runtime.registry.start_order: auth first, since everyone verifies its tokens).
SERVICES = [(p.name, p.module, p.port, p.metrics_port) for p in start_order() if p.kind == "grpc"]
ADDR_VARS = {p.name: p.addr_env for p in grpc_services()}
_GATEWAY = process("gateway")
GATEWAY_PORT = _GATEWAY.port
GATEWAY_METRICS_PORT = _GATEWAY.metrics_port
OFFLINE_LLM_PORT = 8100
OFFLINE_LLM_READY = re.compile(r"offline LLM listening on (?P<url>http://\S+)")
GATEWAY_READY = re.compile(r"gateway listening on (?P<url>http://\S+)(?: metrics=(?P<metrics>\S+))?")


def module_exists(module: str) -> bool:
    """Whether this checkout has the service yet (services land one by one)."""
    return (ROOT / module.replace(".", "/") / "__main__.py").is_file()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mesh:
    data_dir: Path
    log_dir: Path
    ephemeral_ports: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ChildProcess] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    llm_url: str = ""
    gateway_url: str = ""
    # `make run` sets it: its children die with it (see processes._die_with_parent).
    die_with_parent: bool = False
    # Whether plan() started (or joined) the embedded Postgres rather than using DATABASE_URL.
    embedded_postgres: bool = False

    def _port(self, default: int) -> int:
        return free_port() if self.ephemeral_ports else default

    def plan(self, *, database: bool = True) -> None:
        """Fixes every address up front: services call each other both ways. With
        `database=False` the embedded Postgres is not started yet (plan_database() does)."""
        env = {**os.environ, **self.extra_env}
        env.setdefault("APP_ENV", "development")
        env["PYTHONUNBUFFERED"] = "1"
        self._ports: dict[str, tuple[int, int]] = {}
        for name, _module, grpc_port, metrics_port in SERVICES:
            self._ports[name] = (self._port(grpc_port), self._port(metrics_port))
            env.setdefault(ADDR_VARS[name], f"127.0.0.1:{self._ports[name][0]}")
        self._gateway_port = self._port(GATEWAY_PORT)
        self._gateway_metrics_port = self._port(GATEWAY_METRICS_PORT)
        self._llm_port = self._port(OFFLINE_LLM_PORT)
        self.env = env
        if database:
            self.plan_database()

    def plan_database(self) -> None:
        if not self.env.get("DATABASE_URL"):
            self.env["DATABASE_URL"] = embedded_database_url(self.data_dir)
            self.embedded_postgres = True

    def planned_ports(self) -> list[tuple[int, str]]:
        """Every TCP port the mesh will listen on, with what listens there (after plan())."""
        ports: list[tuple[int, str]] = []
        if self.wants_offline_llm():
            ports.append((self._llm_port, "offline LLM"))
        for name, module, *_ in SERVICES:
            if module_exists(module):
                grpc_port, metrics_port = self._ports[name]
                ports += [(grpc_port, f"{name} gRPC"), (metrics_port, f"{name} metrics")]
        if module_exists(_GATEWAY.module):
            ports += [(self._gateway_port, "gateway HTTP"), (self._gateway_metrics_port, "gateway metrics")]
        return ports

    def wants_offline_llm(self) -> bool:
        return not (self.env.get("LLM_BASE_URL") or self.env.get("OPENAI_API_KEY")) and module_exists("offline_llm")

    def start(self, only: Iterable[str] | None = None, *, planned: bool = False) -> None:
        if not planned:
            self.plan()
        wanted = set(only) if only is not None else None
        if self.wants_offline_llm():
            self.start_offline_llm()
        for entry in start_order():
            if (wanted is None or entry.name in wanted) and module_exists(entry.module):
                if entry.kind == "gateway":
                    self.start_gateway()
                else:
                    self.start_service(entry.name)

    def start_offline_llm(self) -> ChildProcess:
        env = {**self.env, "OFFLINE_LLM_PORT": str(self._llm_port)}
        child = ChildProcess(
            "offline-llm",
            python_module("offline_llm"),
            env,
            self.log_dir / "offline-llm.log",
            OFFLINE_LLM_READY,
            die_with_parent=self.die_with_parent,
        ).start()
        self.processes["offline-llm"] = child
        self.llm_url = child.ready_match["url"].rstrip("/") + "/v1"
        self.env["LLM_BASE_URL"] = self.llm_url
        return child

    def service_env(self, name: str, **overrides: str) -> dict[str, str]:
        grpc_port, metrics_port = self._ports[name]
        return {**self.env, "GRPC_PORT": str(grpc_port), "METRICS_PORT": str(metrics_port), **overrides}

    def start_service(self, name: str, *, instance: str = "", **overrides: str) -> ChildProcess:
        """Starts a service; `instance` names another replica, which listens on free ports
        unless GRPC_PORT / METRICS_PORT are given (a restart test reuses them)."""
        module = process(name).module
        key = f"{name}{instance}"
        if instance:
            overrides = {"GRPC_PORT": str(free_port()), "METRICS_PORT": str(free_port()), **overrides}
        env = self.service_env(name, **overrides)
        child = ChildProcess(
            key, python_module(module), env, self.log_dir / f"{key}.log", die_with_parent=self.die_with_parent
        ).start()
        self.processes[key] = child
        return child

    def start_gateway(self, **overrides: str) -> ChildProcess:
        env = {
            **self.env,
            "GATEWAY_PORT": str(self._gateway_port),
            "GATEWAY_METRICS_PORT": str(self._gateway_metrics_port),
            **overrides,
        }
        child = ChildProcess(
            "gateway",
            python_module(_GATEWAY.module),
            env,
            self.log_dir / "gateway.log",
            GATEWAY_READY,
            die_with_parent=self.die_with_parent,
        )
        child.start()
        self.processes["gateway"] = child
        self.gateway_url = child.ready_match["url"].rstrip("/")
        return child

    def addr(self, name: str) -> str:
        return self.env[ADDR_VARS[name]]

    def stop(self) -> None:
        # Reverse start order: the gateway first, auth last.
        for key in reversed(list(self.processes)):
            self.processes[key].stop()
        self.processes.clear()
        if self.embedded_postgres:
            release_embedded_database(self.data_dir)
            self.embedded_postgres = False


__all__ = ["Mesh", "StartError", "free_port"]
