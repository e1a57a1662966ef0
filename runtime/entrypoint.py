"""How a process's `__main__` ends: a configuration error is the operator's to fix, so it is
printed as one message and a non-zero status, not as a stack trace (issue 12). Anything else
keeps its traceback: that one is ours to fix."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

from runtime.settings import ConfigurationError

# What a SystemExit carrying a message used to give; supervisors and tests see the same status.
CONFIGURATION_EXIT_STATUS = 1


def exit_on_configuration_error(main: Callable[[], int | None]) -> NoReturn:
    """Runs `main` and exits with its status (None: 0); a ConfigurationError exits
    CONFIGURATION_EXIT_STATUS with its message on stderr."""
    try:
        status = main()
    except ConfigurationError as exc:
        print(exc, file=sys.stderr, flush=True)
        sys.exit(CONFIGURATION_EXIT_STATUS)
    sys.exit(status or 0)
