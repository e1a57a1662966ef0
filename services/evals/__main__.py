"""`python -m services.evals` serves agentmesh.evals.v1.EvalService; the command line that
grades and gates (`run`, `golden`) is `python -m services.evals.client`."""

from __future__ import annotations

import sys

from runtime.entrypoint import exit_on_configuration_error
from runtime.server import run
from runtime.settings import load_settings
from services.evals.app import EvalsApp
from services.evals.settings import EvalsSettings

MOVED = {"run", "golden"}


def main(argv: list[str]) -> int:
    if argv and argv[0] in MOVED:
        print(f"`{argv[0]}` moved: python -m services.evals.client {' '.join(argv)}", file=sys.stderr)
        return 2
    if argv and argv[0] != "serve":
        print("usage: python -m services.evals [serve]", file=sys.stderr)
        return 2
    run(EvalsApp(load_settings(EvalsSettings)))
    return 0


if __name__ == "__main__":
    exit_on_configuration_error(lambda: main(sys.argv[1:]))
