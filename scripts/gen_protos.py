"""Generate the Python code and the descriptor set from protos/.

`python scripts/gen_protos.py` writes into the repository; `--check` generates into a
temporary folder and fails when the committed files differ (stale generated code).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
VENDORED = ROOT / "third_party" / "googleapis"
WELL_KNOWN = Path(grpc_tools.__file__).parent / "_proto"
PACKAGE = "agentmesh"
DESCRIPTOR_SET = Path(PACKAGE) / "descriptors.binpb"


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    (out / DESCRIPTOR_SET).parent.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{VENDORED}",
        f"-I{WELL_KNOWN}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--descriptor_set_out={out / DESCRIPTOR_SET}",
        "--include_imports",
        "--include_source_info",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Make every generated folder a regular package so tools and type checkers find it.
    for folder in [out / PACKAGE, *(p for p in (out / PACKAGE).rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()


def generated_files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in (root / PACKAGE).rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected, actual = generated_files(fresh), generated_files(ROOT)
        stale = sorted(str(p) for p in expected ^ actual)
        stale += sorted(str(p) for p in expected & actual if not filecmp.cmp(fresh / p, ROOT / p, shallow=False))
    if stale:
        print("generated code is stale; run `make proto` and commit:", *stale, sep="\n  ")
        return 1
    print("generated code is up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the committed code is stale")
    if parser.parse_args().check:
        return check()
    shutil.rmtree(ROOT / PACKAGE, ignore_errors=True)
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
