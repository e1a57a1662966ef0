"""`python -m services.evals.client run|golden`."""

from __future__ import annotations

import sys

from runtime.entrypoint import exit_on_configuration_error
from services.evals.client.cli import main

if __name__ == "__main__":
    exit_on_configuration_error(lambda: main(sys.argv[1:]))
