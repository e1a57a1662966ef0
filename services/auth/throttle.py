"""Per-account login throttling, shared by every replica through Postgres.

After LOGIN_MAX_FAILURES failed logins for one email within LOGIN_FAILURE_WINDOW_S,
further attempts for that email are refused with RESOURCE_EXHAUSTED before the password
is even checked, whatever the client address. Unknown emails are counted exactly like
known ones, so the answer never tells whether an account exists. A successful login
clears the count.
"""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from runtime.errors import ResourceExhausted
from services.auth.store import AuthStore


class LoginThrottled(ResourceExhausted):
    """RESOURCE_EXHAUSTED with a RetryInfo detail (the gateway turns it into Retry-After)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "too many failed logins for this account; try again later",
            reason="LOGIN_THROTTLED",
            metadata={"retry_after_s": str(retry_after_s)},
        )
        self.retry_after_s = retry_after_s

    def to_status(self) -> status_pb2.Status:
        status = super().to_status()
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=self.retry_after_s)))
        status.details.append(retry)
        return status


def account_key(email: str) -> bytes:
    # A hash, not the address: the table must not collect the emails people mistype.
    return hashlib.sha256(b"login:" + email.strip().lower().encode()).digest()


class LoginThrottle:
    def __init__(self, store: AuthStore, *, max_failures: int, window_s: int) -> None:
        self._store = store
        self._max_failures = max_failures
        self._window = timedelta(seconds=window_s)

    async def check(self, key: bytes) -> int:
        """Refuses a throttled account; returns the failures counted so far."""
        failures, now = await self._store.login_failures(key, self._window)
        if len(failures) >= self._max_failures:
            # The attempt that unlocks is the one after enough failures leave the window.
            unlocks_at = failures[len(failures) - self._max_failures] + self._window
            raise LoginThrottled(max(1, math.ceil((unlocks_at - now).total_seconds())))
        return len(failures)

    async def record_failure(self, key: bytes) -> None:
        await self._store.record_login_failure(key, self._window)

    async def clear(self, key: bytes) -> None:
        await self._store.clear_login_failures(key)

    async def forget_old(self) -> None:
        await self._store.forget_old_login_failures(self._window)
