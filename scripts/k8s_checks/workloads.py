"""The manifests' workloads that run our image, with the env each container starts with."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic_settings import BaseSettings

from .common import FIELD_PLACEHOLDERS, SECRET_PLACEHOLDERS, WORKLOAD_KINDS, CheckFailed, Doc, by_kind
from .programs import Program, program_for


@dataclass
class Workload:
    doc: Doc
    container: Doc
    program: Program
    env: dict[str, str]
    secret_env: set[str]
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def pod_spec(self) -> Doc:
        return self.doc["spec"]["template"]["spec"]

    def port(self, name: str) -> int | None:
        for port in self.container.get("ports", []):
            if port.get("name") == name:
                return int(port["containerPort"])
        return None

    def resolve_port(self, port: int | str) -> int | None:
        return int(port) if isinstance(port, int) else self.port(port)


_VAR_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def container_env(container: Doc, docs: list[Doc], *, local: bool = False) -> tuple[dict[str, str], set[str]]:
    """The env a container starts with: envFrom ConfigMaps, then env in order, with
    `$(VAR)` references expanded the way the kubelet does (earlier variables only)."""
    configmaps = {doc["metadata"]["name"]: doc.get("data", {}) for doc in by_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    from_secrets: set[str] = set()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            if name not in configmaps:
                raise CheckFailed(f"container {container['name']}: ConfigMap {name} is not in the render")
            env.update(configmaps[name])
        else:
            raise CheckFailed(f"container {container['name']}: envFrom {source} (only ConfigMaps are expected)")
    for var in container.get("env", []):
        value_from = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = _VAR_REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), str(var["value"]))
        elif "secretKeyRef" in value_from:
            from_secrets.add(var["name"])
            env[var["name"]] = SECRET_PLACEHOLDERS.get(var["name"], "placeholder")
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            env[var["name"]] = configmaps[ref["name"]][ref["key"]]
        elif "fieldRef" in value_from:
            path = value_from["fieldRef"]["fieldPath"]
            label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
            if label:
                env[var["name"]] = str(container.get("_pod_labels", {}).get(label.group(1), ""))
            else:
                env[var["name"]] = FIELD_PLACEHOLDERS.get(path, "placeholder")
    return env, from_secrets


def composition_only_env(container: Doc) -> set[str]:
    """Variables that exist only to be composed into others (`$(POD_NAME)` in
    OTEL_RESOURCE_ATTRIBUTES, `$(REDIS_PASSWORD)` in a URL), so no settings class reads them."""
    referenced = set()
    for var in container.get("env", []):
        referenced.update(_VAR_REFERENCE.findall(str(var.get("value", ""))))
    for arg in [*container.get("args", []), *container.get("command", [])]:
        referenced.update(_VAR_REFERENCE.findall(str(arg)))
    return referenced


def mesh_workloads(docs: list[Doc]) -> list[Workload]:
    """Every workload that runs our image (Postgres and Redis are not ours)."""
    workloads = []
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if "command" not in container:
                continue
            program = program_for(container["command"])
            labels = doc["spec"]["template"]["metadata"].get("labels", {})
            env, secrets = container_env({**container, "_pod_labels": labels}, docs)
            workloads.append(Workload(doc, container, program, env, secrets, labels))
    return workloads


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load_program_settings(workload: Workload) -> list[BaseSettings]:
    with environment(workload.env):
        return [cls(_env_file=None) for cls in workload.program.settings]  # type: ignore[call-arg]


def setting(loaded: list[BaseSettings], name: str) -> Any:
    for obj in loaded:
        if name in type(obj).model_fields:
            return getattr(obj, name)
    raise KeyError(name)
