"""The image holds every package of this repository that the processes it runs import: a
package missing from the Dockerfile's COPY lines imports fine from a checkout and fails in
the cluster (the runtime/ move left it out)."""

from __future__ import annotations

import ast
import re

from runtime.registry import PROCESSES, REPO_ROOT

# Run from the image besides the registry's processes: the offline model (components/offline-llm).
EXTRA_ENTRY_PACKAGES = ("offline_llm",)


def local_packages() -> set[str]:
    return {path.name for path in REPO_ROOT.iterdir() if (path / "__init__.py").is_file()}


def imported_local_packages(package: str, local: set[str]) -> set[str]:
    found: set[str] = set()
    for path in (REPO_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.partition(".")[0])
    return found & local


def needed_packages() -> set[str]:
    local = local_packages()
    pending = {entry.module.partition(".")[0] for entry in PROCESSES} | set(EXTRA_ENTRY_PACKAGES)
    needed: set[str] = set()
    while pending:
        package = pending.pop()
        needed.add(package)
        pending |= imported_local_packages(package, local) - needed
    return needed


def copied_packages(dockerfile: str) -> set[str]:
    return set(re.findall(r"^COPY\s+(?:--\S+\s+)*(\w+)\s+\./\1\s*$", dockerfile, flags=re.MULTILINE))


def test_the_image_copies_every_package_its_processes_import() -> None:
    needed = needed_packages()
    assert {"runtime", "services", "gateway", "agentmesh", "llm_tasks"} <= needed
    missing = needed - copied_packages((REPO_ROOT / "Dockerfile").read_text())
    assert not missing, f"Dockerfile: add COPY lines for {sorted(missing)}"


def test_a_missing_package_is_noticed() -> None:
    dockerfile = "COPY --chown=root:root services ./services\nCOPY gateway ./gateway\n"
    assert copied_packages(dockerfile) == {"services", "gateway"}
    assert needed_packages() - copied_packages(dockerfile)
