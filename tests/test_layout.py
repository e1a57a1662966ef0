"""The test tree's own rules: test modules and conftest files share code only through
tests/support/. Importing a test module runs its module-level code and registers its fixtures
a second time; importing a conftest.py bypasses pytest's fixture discovery."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import in the file; `from x import y` is `x.y` when
    y is a module (`from tests.area import test_b`), else `x`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            named = [f"{module.rstrip('.')}.{alias.name}" for alias in node.names]
            found.append((node.lineno, next((name for name in named if forbidden(name)), module)))
    return found


def forbidden(module: str) -> bool:
    parts = module.split(".")
    if module.startswith("."):
        return True  # a relative import inside tests/ reaches a sibling test module or conftest
    if parts[0] != "tests":
        return False
    return any(part == "conftest" or part.startswith("test_") for part in parts[1:])


def violations(root: Path) -> list[str]:
    return [
        f"{path.relative_to(root.parent)}:{line}: imports {module}"
        for path in sorted(root.rglob("*.py"))
        for line, module in imported_modules(path)
        if forbidden(module)
    ]


def test_no_test_module_or_conftest_is_imported() -> None:
    found = violations(TESTS)
    assert found == [], "move shared helpers to tests/support/<topic>.py:\n" + "\n".join(found)


def test_the_check_catches_each_forbidden_form(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    (tests / "area").mkdir(parents=True)
    (tests / "area" / "test_a.py").write_text(
        "from tests.area.conftest import helper\n"
        "from tests.area.test_b import other\n"
        "import tests.conftest\n"
        "from tests.area import test_b\n"
        "from .conftest import helper\n"
        "from tests.support.waiting import eventually\n"
        "from services.agent.test_data import fixture_like\n"
    )
    assert violations(tests) == [
        "tests/area/test_a.py:1: imports tests.area.conftest.helper",
        "tests/area/test_a.py:2: imports tests.area.test_b.other",
        "tests/area/test_a.py:3: imports tests.conftest",
        "tests/area/test_a.py:4: imports tests.area.test_b",
        "tests/area/test_a.py:5: imports .conftest.helper",
    ]
