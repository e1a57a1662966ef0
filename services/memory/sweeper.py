"""Deletes expired memories with their history, on every replica (SKIP LOCKED hands each
row to one of them). Search and list already skip expired memories; this bounds storage."""

from __future__ import annotations

import asyncio
import contextlib

from runtime.logging import get_logger
from services.memory.store import MemoryStore

log = get_logger(__name__)


class MemorySweeper:
    def __init__(self, store: MemoryStore, *, interval_s: float, batch: int, key_ttl_s: float) -> None:
        self._store = store
        self._key_ttl_s = key_ttl_s
        self._interval_s = interval_s
        self._batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="memory-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sweep_once(self) -> int:
        deleted = 0
        while True:
            batch = await self._store.sweep_expired(self._batch)
            deleted += batch
            if batch < self._batch:
                break
        keys = await self._store.sweep_keys(self._key_ttl_s)
        if deleted or keys:
            log.info("memories_expired", deleted=deleted, idempotency_keys=keys)
        return deleted

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed pass (database down, say) is retried next interval
                log.exception("memory_sweep_failed")
            await asyncio.sleep(self._interval_s)
