"""Rate limits per route class with the `limits` library, in memory or in Redis."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from runtime.logging import get_logger

log = get_logger(__name__)

DEFAULT_CLASS = "default"
READ_CLASS = "read"


def async_storage_uri(url: str) -> str:
    """`redis://host/1` -> `async+redis://host/1`: the settings use the plain URLs operators know."""
    return url if url.startswith("async+") else f"async+{url}"


@dataclass(frozen=True)
class RateLimitDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window that decided this resets

    def headers(self) -> dict[str, str]:
        # RateLimit-* as in draft-ietf-httpapi-ratelimit-headers: Reset is a delay, not a date.
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_after)
        return headers


class RateLimiter:
    """Counts requests per (route class, caller) against every limit of the class.

    Fixed windows, as the seed's slowapi used: one counter per window, cheap in Redis. A storage
    failure lets requests through and logs it, since an outage of the limiter must not take the
    whole API down with it.
    """

    def __init__(
        self,
        limits_by_class: Mapping[str, str],
        class_by_rpc: Mapping[str, str],
        *,
        storage_url: str,
        key_prefix: str,
    ) -> None:
        self._limits: dict[str, list[RateLimitItem]] = {
            name: parse_many(text) for name, text in limits_by_class.items() if text.strip()
        }
        self._class_by_rpc = dict(class_by_rpc)
        uri = async_storage_uri(storage_url)
        options: dict[str, str] = {} if uri.startswith("async+memory") else {"key_prefix": key_prefix}
        self._storage = storage_from_string(uri, **options)
        self._strategy = FixedWindowRateLimiter(self._storage)  # type: ignore[arg-type]

    def class_for(self, rpc_full_name: str, http_method: str = "") -> str:
        """The RPC's own class; else `read` for GET (cheap, polled by pages and scripts, so
        counted per minute), else `default`."""
        named = self._class_by_rpc.get(rpc_full_name)
        if named is not None:
            return named
        if http_method in ("GET", "HEAD") and READ_CLASS in self._limits:
            return READ_CLASS
        return DEFAULT_CLASS

    async def hit(self, route_class: str, caller: str) -> RateLimitDecision | None:
        items = self._limits.get(route_class) or self._limits.get(DEFAULT_CLASS) or []
        if not items:
            return None
        tightest: RateLimitDecision | None = None
        now = time.time()
        try:
            for item in items:
                allowed = await self._strategy.hit(item, route_class, caller)
                stats = await self._strategy.get_window_stats(item, route_class, caller)
                decision = RateLimitDecision(
                    allowed=allowed,
                    limit=item.amount,
                    remaining=max(0, stats.remaining),
                    # Redis reports the key's TTL rounded up, which can overshoot the window by 1s.
                    reset_after=min(item.get_expiry(), max(1, math.ceil(stats.reset_time - now))),
                )
                if not allowed:
                    return decision
                if tightest is None or decision.remaining < tightest.remaining:
                    tightest = decision
        except Exception:
            log.warning("rate_limit_storage_failed", exc_info=True)
            return None
        return tightest

    async def reset(self) -> None:
        await self._storage.reset()

    async def close(self) -> None:
        closer = getattr(self._storage, "aclose", None) or getattr(self._storage, "close", None)
        if closer is not None:
            result = closer()
            if hasattr(result, "__await__"):
                await result
