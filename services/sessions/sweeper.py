"""Retention: expired sessions are deleted with everything that belongs to them.

Users never see an expired session, swept or not (the store filters them). Every replica
runs the sweeper: a pass records a pending conversation clear for each newly expired
session, then asks the agent service to clear the due ones, as the sessions service on
behalf of the owner (the agent checks the session with us, and our own token may still
see it). Only when the agent confirms do the session row and its record go; a failure is
retried with backoff (`FOR UPDATE SKIP LOCKED` hands each record to one replica), so an
agent outage delays the erasure but never loses it.
"""

from __future__ import annotations

from runtime.errors import DomainError
from runtime.logging import get_logger
from runtime.sweeper import Sweeper, delete_in_batches
from services.sessions.conversations import ConversationCleaner
from services.sessions.store import SessionStore

log = get_logger(__name__)

MAX_RETRY_DELAY_S = 300.0
# Clears asked of the agent per pass: each holds its row lock until the pass ends, and an
# agent that hangs costs up to AGENT_CALL_TIMEOUT_S per clear.
CLEARS_PER_PASS = 10


def retry_delay_s(attempts: int, base_s: float) -> float:
    return min(MAX_RETRY_DELAY_S, base_s * 2 ** min(attempts, 16))


class SessionSweeper(Sweeper):
    def __init__(
        self, store: SessionStore, conversations: ConversationCleaner, *, interval_s: float, batch: int
    ) -> None:
        super().__init__("session", interval_s=interval_s)
        self._store = store
        self._conversations = conversations
        self._batch = batch

    async def sweep_once(self) -> tuple[int, int]:
        """(sessions newly expired, sessions deleted with their conversation) in one pass."""
        deleted = await delete_in_batches(self._store.sweep_expired, self._batch)
        cleared = 0
        async with self._store.due_clears(min(self._batch, CLEARS_PER_PASS)) as (pending, ledger):
            for clear in pending:
                try:
                    await self._conversations.clear_for(clear.session_id, clear.user_id)
                except (DomainError, RuntimeError) as exc:
                    error = exc.reason if isinstance(exc, DomainError) else type(exc).__name__
                    await ledger.failed(clear.session_id, error, retry_delay_s(clear.attempts, self._interval_s))
                    log.warning("conversation_clear_failed", attempts=clear.attempts + 1, error=error)
                    continue
                await ledger.done(clear.session_id)
                cleared += 1
        if deleted or cleared:
            log.info("sessions_swept", expired=deleted, deleted=cleared)
        return deleted, cleared
