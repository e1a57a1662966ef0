"""Which model errors are worth retrying, and how long to wait before the next attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx
import openai

RETRYABLE_STATUS = frozenset({408, 409, 429})


class EmptyModelStream(Exception):
    """The server closed the stream without a single chunk."""


class MalformedAnswer(ValueError):
    """A structured answer that is not JSON, or not what the caller's schema asks for: the
    model is up but answered badly this time, so it is retried like a transient failure."""


def error_kind(exc: BaseException) -> str | None:
    """A short label for a transient failure (429, 5xx, timeout, connection, a malformed
    structured answer); None if not transient."""
    if isinstance(exc, EmptyModelStream):
        return "empty"
    if isinstance(exc, MalformedAnswer):
        return "invalid_json"
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429:
            return "429"
        if exc.status_code >= 500:
            return "5xx"
        if exc.status_code in RETRYABLE_STATUS:
            return str(exc.status_code)
    return None


def retry_after_s(exc: BaseException) -> float | None:
    """The server's `retry-after-ms` / `retry-after` (seconds) header, when it sent one."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:
        return None  # an HTTP date: rare from model servers, fall back to our backoff
    return None


@dataclass(frozen=True)
class Backoff:
    base_s: float
    max_s: float
    retry_after_max_s: float

    def delay_s(self, attempt: int, exc: BaseException) -> float | None:
        """Seconds before attempt `attempt + 1`, or None when the server asks for longer than we wait."""
        # Full jitter: replicas retrying after the same 429 do not come back in lockstep.
        delay = random.uniform(0, min(self.max_s, self.base_s * 2 ** (attempt - 1)))
        asked = retry_after_s(exc)
        if asked is not None:
            if asked > self.retry_after_max_s:
                return None
            delay = max(delay, asked)
        return delay
