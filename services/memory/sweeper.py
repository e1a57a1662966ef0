"""Deletes expired memories with their history, on every replica (SKIP LOCKED hands each
row to one of them). Search and list already skip expired memories; this bounds storage."""

from __future__ import annotations

from runtime.logging import get_logger
from runtime.sweeper import Sweeper, delete_in_batches
from services.memory.store import MemoryStore

log = get_logger(__name__)


class MemorySweeper(Sweeper):
    def __init__(self, store: MemoryStore, *, interval_s: float, batch: int, key_ttl_s: float) -> None:
        super().__init__("memory", interval_s=interval_s)
        self._store = store
        self._key_ttl_s = key_ttl_s
        self._batch = batch

    async def sweep_once(self) -> int:
        deleted = await delete_in_batches(self._store.sweep_expired, self._batch)
        keys = await self._store.sweep_keys(self._key_ttl_s)
        if deleted or keys:
            log.info("memories_expired", deleted=deleted, idempotency_keys=keys)
        return deleted
