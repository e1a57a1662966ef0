"""`python -m services.evals [serve]` serves; `run` grades a batch; `golden` gates a prompt change."""

from __future__ import annotations

import sys

from services.evals.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
