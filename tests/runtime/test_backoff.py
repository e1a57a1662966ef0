"""Which model failures are retried and how long to wait (runtime/llm/retry.py), beyond the
cases in tests/llm/test_llm_client.py: every error kind, the growth of the backoff cap."""

from __future__ import annotations

import random

import httpx
import openai
import pytest

from runtime.llm.retry import Backoff, EmptyModelStream, MalformedAnswer, error_kind, retry_after_s

REQUEST = httpx.Request("POST", "http://model/v1/chat/completions")


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx.Response(status, headers=headers or {}, request=REQUEST)
    return openai.APIStatusError(f"status {status}", response=response, body=None)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (EmptyModelStream(), "empty"),
        (MalformedAnswer("not json"), "invalid_json"),
        (openai.APITimeoutError(request=REQUEST), "timeout"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (openai.APIConnectionError(request=REQUEST), "connection"),
        (httpx.ConnectError("refused"), "connection"),
        (status_error(429), "429"),
        (status_error(500), "5xx"),
        (status_error(503), "5xx"),
        (status_error(408), "408"),
        (status_error(409), "409"),
        (status_error(400), None),
        (status_error(401), None),
        (status_error(404), None),
        (KeyError("a bug of ours"), None),
    ],
    ids=lambda value: value if isinstance(value, str | type(None)) else type(value).__name__,
)
def test_error_kind_labels_only_transient_failures(exc: BaseException, kind: str | None) -> None:
    assert error_kind(exc) == kind


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        # Milliseconds are more precise: they win when both are sent.
        ({"retry-after-ms": "250", "retry-after": "3"}, 0.25),
        ({"retry-after": "soon"}, None),
    ],
)
def test_retry_after_is_read_from_the_response_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_s(status_error(429, headers)) == seconds


def test_retry_after_of_an_error_without_a_response_is_none() -> None:
    assert retry_after_s(httpx.ConnectError("refused")) is None


def test_the_backoff_cap_doubles_per_attempt_up_to_the_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the jitter pinned at its upper end, the delay is the cap itself.
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    backoff = Backoff(base_s=0.5, max_s=3.0, retry_after_max_s=10.0)
    plain = RuntimeError("no headers")
    assert [backoff.delay_s(attempt, plain) for attempt in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_server_asking_for_less_than_the_jitter_does_not_shorten_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    backoff = Backoff(base_s=2.0, max_s=8.0, retry_after_max_s=10.0)
    assert backoff.delay_s(1, status_error(429, {"retry-after-ms": "100"})) == 2.0
    assert backoff.delay_s(1, status_error(429, {"retry-after": "10"})) == 10.0  # at the limit: waited for
