"""The golden gate: the dataset itself, and `python -m services.evals.client golden` through the
real agent when the mesh has one."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from meshctl.mesh import Mesh
from services.evals.client.golden import load_dataset
from services.evals.client.login import CommandError
from services.evals.metrics_catalog import MetricCatalog, MetricFileError, parse_metric_file
from services.evals.settings import PACKAGE_DIR
from tests.support.users import MeshUser

DATASET = PACKAGE_DIR / "datasets" / "golden.jsonl"


def test_golden_dataset_has_10_to_20_cases_with_known_metrics_and_a_calculator_one() -> None:
    cases = load_dataset(DATASET)
    known = {m.name for m in MetricCatalog.load(PACKAGE_DIR / "metrics")}
    assert 10 <= len(cases) <= 20
    assert len({c.id for c in cases}) == len(cases)
    assert all({*c.metrics_max, *c.metrics_min} <= known for c in cases)
    assert any("84" in c.expect_contains for c in cases)


def test_a_malformed_golden_line_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "prompt": "Hello!"}\n{"id": "no-prompt"}\n')
    with pytest.raises(CommandError, match=r"bad\.jsonl:2"):
        load_dataset(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("no front matter", "front matter"),
        ("---\ndescription: x\ndirection: sideways\nthreshold: 0.5\n---\nprompt", "direction"),
        ("---\ndescription: x\ndirection: lower\nthreshold: 2\n---\nprompt", "threshold"),
        ("---\ndescription: x\ndirection: lower\nthreshold: 0.5\n---\n", "prompt"),
    ],
)
def test_a_bad_metric_file_is_refused_with_its_name(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "custom.md"
    path.write_text(text)
    with pytest.raises(MetricFileError, match=problem) as error:
        parse_metric_file(path)
    assert "custom.md" in str(error.value)


def test_adding_a_file_adds_a_metric(tmp_path: Path) -> None:
    for path in (PACKAGE_DIR / "metrics").glob("*.md"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "politeness.md").write_text(
        "---\ndescription: Polite.\ndirection: higher\nthreshold: 0.4\n---\nBe fair."
    )
    catalog = MetricCatalog.load(tmp_path)
    assert len(catalog) == 6
    politeness = catalog.get("politeness")
    assert politeness.crosses_threshold(0.3) and not politeness.crosses_threshold(0.5)
    assert catalog.get("toxicity").crosses_threshold(0.21) and not catalog.get("toxicity").crosses_threshold(0.2)


def run_golden(mesh: Mesh, admin: MeshUser, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**mesh.env, "EVALS_ADMIN_EMAIL": admin.email, "EVALS_ADMIN_PASSWORD": MeshUser.PASSWORD}
    command = [sys.executable, "-m", "services.evals.client", "golden", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=110)


@pytest.fixture
def agent_running(mesh: Mesh) -> None:
    if "agent" not in mesh.processes:
        pytest.skip("MESH_ONLY leaves out the agent; the golden gate needs the real agent")


@pytest.mark.usefixtures("agent_running")
async def test_golden_gate_passes_with_the_offline_model(mesh: Mesh, admin: MeshUser) -> None:
    result = await asyncio.to_thread(run_golden, mesh, admin)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = len(load_dataset(DATASET))
    assert f"{cases}/{cases} cases pass; thresholds crossed: none" in result.stdout
    assert "calculator-parentheses" in result.stdout


@pytest.mark.usefixtures("agent_running")
async def test_golden_gate_fails_on_a_regression(mesh: Mesh, admin: MeshUser, tmp_path: Path) -> None:
    dataset = tmp_path / "strict.jsonl"
    dataset.write_text('{"id": "impossible", "prompt": "Hello!", "expect_contains": ["zebra"]}\n')
    result = await asyncio.to_thread(run_golden, mesh, admin, "--dataset", str(dataset))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "FAIL" in result.stdout and "answer lacks 'zebra'" in result.stdout


def test_the_evals_server_imports_nothing_of_its_command_line_client() -> None:
    """The CLI (`run`, `golden`) is a client of the mesh: the server package must not depend on it,
    so it can change (or leave the package) without touching what serves EvalService."""
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "client" in path.relative_to(PACKAGE_DIR).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.startswith("services.evals.client") for n in names), f"{path} imports {names}"


def test_the_client_modules_import_each_other_one_way() -> None:
    """cli -> golden -> evaluation -> login: no module imports one that imports it back."""
    client = PACKAGE_DIR / "client"
    imports: dict[str, set[str]] = {}
    for path in client.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imports[path.stem] = {m.rsplit(".", 1)[1] for m in found if m.startswith("services.evals.client.")}

    def reaches(start: str, target: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(n == target or (n not in seen and reaches(n, target, seen | {n})) for n in imports.get(start, ()))

    assert not [name for name in imports if reaches(name, name)]
