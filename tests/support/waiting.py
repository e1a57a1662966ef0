"""Waiting for something to become true, the one way tests do it (never a bare sleep).

`check` signals "not yet" by raising AssertionError (so the last failure explains a
timeout) and "done" by returning; what it returns is handed back to the caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], *, timeout_s: float, interval_s: float = 0.05) -> T:
    """Polls `check` until it returns without raising AssertionError; re-raises the last one."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval_s)


def eventually_sync(check: Callable[[], T], *, timeout_s: float, interval_s: float = 0.05) -> T:
    """`eventually` for synchronous tests and fixtures (no event loop to yield to)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval_s)
