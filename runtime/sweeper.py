"""The background sweep loop every replica of a service with expiring data runs: one pass
each interval until the service stops. What a pass deletes is the service's own part
(`Sweeper.sweep_once`); the loop, its failure handling and batched deletes are shared.

Every replica sweeps: the services' deletes take rows with `FOR UPDATE SKIP LOCKED`, so
concurrent passes split the work instead of colliding.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from runtime.logging import get_logger

log = get_logger(__name__)


async def delete_in_batches(delete_batch: Callable[[int], Awaitable[int]], batch: int) -> int:
    """Repeats `delete_batch(batch)` until a batch comes back short; returns the total deleted.

    Small batches keep each delete's locks and transaction short while another replica
    (or a request) works on the same table."""
    deleted = 0
    while True:
        count = await delete_batch(batch)
        deleted += count
        if count < batch:
            return deleted


class Sweeper(ABC):
    """Runs `sweep_once` now and then every `interval_s` until closed; a failed pass
    (database down, say) is logged as `<name>_sweep_failed` and retried next interval."""

    def __init__(self, name: str, *, interval_s: float) -> None:
        self._name = name
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def sweep_once(self) -> object:
        """One pass over the service's expired data; what it returns is for tests and callers."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed pass is retried next interval
                log.exception(f"{self._name}_sweep_failed")
            await asyncio.sleep(self._interval_s)
