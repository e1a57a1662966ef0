"""scripts/k8s_check.py loaded as a module (it is a script, not a package), and reading the
manifests it renders."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _load_k8s_check() -> ModuleType:
    # One module object for every test file that loads it: dataclasses and enums compare by identity.
    loaded = sys.modules.get("k8s_check")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location("k8s_check", ROOT / "scripts" / "k8s_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["k8s_check"] = module
    spec.loader.exec_module(module)
    return module


k8s_check = _load_k8s_check()


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The rendered object of that kind and name."""
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
