"""The auth side of token revocation: the `token_revocations` table, this replica's
view of it, and the WatchRevocations stream every service follows.

A revocation is written to Postgres (shared by every auth replica), applied at once to
this replica's set and pushed to its watchers. Other replicas learn it by polling the
table every REVOCATION_POLL_S. Ids and creation times are assigned before commit, so rows
do not become visible in their order: each poll re-reads a window that overlaps the
previous one by POLL_OVERLAP and skips the ids it has already published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from runtime.logging import get_logger
from runtime.revocations import FAMILY, USER, Revocation, RevocationSet
from services.auth.store import AuthStore
from services.auth.token_queries import RevocationRow

log = get_logger(__name__)

# Far longer than any revocation's insert-to-commit time (one short statement).
POLL_OVERLAP = timedelta(seconds=30)
# Beyond the access token lifetime: clocks of services and auth may differ a little.
CLOCK_SKEW = timedelta(seconds=60)
SNAPSHOT_BATCH = 1000
# A watcher this far behind is cut off; it reconnects and gets a fresh snapshot.
WATCHER_QUEUE_SIZE = 10_000


def _revocation(row: RevocationRow) -> Revocation:
    not_before = row.not_before.timestamp() if row.not_before is not None else 0.0
    return Revocation(row.kind, row.subject, row.expires_at.timestamp(), not_before)


class WatcherLagging(Exception):
    """The watcher fell behind or the replica is shutting down: it must reconnect."""


class RevocationLog:
    def __init__(self, store: AuthStore, revocations: RevocationSet, *, access_ttl_s: int, poll_s: float) -> None:
        self._store = store
        self._revocations = revocations
        self._keep = timedelta(seconds=access_ttl_s) + CLOCK_SKEW
        self._poll_s = poll_s
        self._seen: dict[int, datetime] = {}
        self._since = datetime.fromtimestamp(0, UTC)
        self._watchers: set[asyncio.Queue[list[Revocation] | None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._publish(await self._store.live_revocations())
        self._revocations.mark_synced()
        self._poller = asyncio.create_task(self._poll_forever(), name="revocation-poll")

    async def revoke_family(self, family_id: str, store: AuthStore | None = None) -> None:
        row = await (store or self._store).insert_revocation(FAMILY, family_id, self._keep)
        self._publish([row])

    async def revoke_user(self, user_id: str, store: AuthStore | None = None) -> int:
        """Refuses every access token of the user issued until now (logout-all, role change,
        account deletion). New tokens, issued after this instant, are not affected.
        Returns the revocation's id."""
        now = datetime.now(UTC)
        row = await (store or self._store).insert_revocation(USER, user_id, self._keep, not_before=now)
        self._publish([row])
        return row.id

    def _publish(self, rows: list[RevocationRow]) -> None:
        fresh = []
        for row in rows:
            if row.id in self._seen:
                continue
            self._seen[row.id] = row.created_at
            self._since = max(self._since, row.created_at)
            revocation = _revocation(row)
            self._revocations.apply(revocation)
            fresh.append(revocation)
        if not fresh:
            return
        for queue in list(self._watchers):
            try:
                queue.put_nowait(fresh)
            except asyncio.QueueFull:
                self._watchers.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                self._publish(await self._store.revocations_since(self._since - POLL_OVERLAP))
                horizon = self._since - POLL_OVERLAP
                self._seen = {rid: created for rid, created in self._seen.items() if created >= horizon}
                self._revocations.prune()
            except Exception:
                # Keep what is known; the next poll's overlap catches up.
                log.exception("revocation_poll_failed")

    async def watch(self) -> AsyncIterator[tuple[list[Revocation], bool]]:
        """Batches for one watcher: the live set (the last batch flagged complete), then news."""
        if self._closing:
            raise WatcherLagging
        queue: asyncio.Queue[list[Revocation] | None] = asyncio.Queue(WATCHER_QUEUE_SIZE)
        self._watchers.add(queue)
        try:
            snapshot = self._revocations.entries()
            for start in range(0, max(len(snapshot), 1), SNAPSHOT_BATCH):
                yield snapshot[start : start + SNAPSHOT_BATCH], start + SNAPSHOT_BATCH >= len(snapshot)
            while True:
                batch = await queue.get()
                if batch is None:
                    raise WatcherLagging
                yield batch, False
        finally:
            self._watchers.discard(queue)

    async def forget_expired(self) -> None:
        await self._store.delete_expired_revocations()

    def end_watches(self) -> None:
        """Ends every stream (shutdown): the services reconnect to another replica."""
        self._closing = True
        for queue in list(self._watchers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    async def stop(self) -> None:
        self.end_watches()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
