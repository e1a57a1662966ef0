"""`python -m services.evals.client run|golden`."""

from __future__ import annotations

import sys

from services.evals.client.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
