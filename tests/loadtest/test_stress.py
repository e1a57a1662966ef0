"""The stress client (`make loadtest-stress`) honours Retry-After: against a gateway of this
test's own with admission limits far below the load, every refused step is waited out and
repeated, and every flow still succeeds; plus the retry loop itself against a scripted server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from loadtest.stress import Tally, send_until_served, stress
from meshctl.mesh import Mesh
from tests.support.gateway import GatewayProcess, gateway_process


def scripted(statuses: list[tuple[int, dict[str, str]]]) -> tuple[httpx.AsyncClient, list[int]]:
    """A client whose server answers the given (status, headers) in turn, then 200s."""
    seen: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(len(seen))
        status, headers = statuses[len(seen) - 1] if len(seen) <= len(statuses) else (200, {})
        return httpx.Response(status, headers=headers, json={})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://stress.test"), seen


async def test_refusals_with_retry_after_are_repeated_and_counted() -> None:
    client, seen = scripted([(503, {"Retry-After": "0"}), (429, {"Retry-After": "0"})])
    tally = Tally()
    async with client:
        response = await send_until_served(client, "login", time.perf_counter() + 10, tally, "POST", "/x")
    assert response.status_code == 200 and len(seen) == 3
    assert tally.shed["login"] == 2 and len(tally.accepted_s["login"]) == 1


async def test_errors_without_retry_after_are_not_repeated() -> None:
    client, seen = scripted([(503, {}), (500, {"Retry-After": "0"})])
    tally = Tally()
    async with client:
        response = await send_until_served(client, "chat", time.perf_counter() + 10, tally, "POST", "/x")
    # A 503 without a hint is an outage, not a refusal: reported as it is, and timed as served.
    assert response.status_code == 503 and len(seen) == 1 and not tally.shed


async def test_a_wait_past_the_deadline_gives_up_at_once() -> None:
    client, seen = scripted([(503, {"Retry-After": "30"})])
    tally = Tally()
    began = time.perf_counter()
    async with client:
        response = await send_until_served(client, "chat", began + 5, tally, "POST", "/x")
    assert response.status_code == 503 and len(seen) == 1 and tally.shed["chat"] == 1
    assert time.perf_counter() - began < 1


@pytest.fixture(scope="module")
def tight_gateway(mesh: Mesh) -> Iterator[GatewayProcess]:
    env = {
        **mesh.env,
        "RATE_LIMIT_ENABLED": "false",
        "ADMISSION_LIMIT_LOGIN": "1",
        "ADMISSION_LIMIT_DEFAULT": "1",
        "ADMISSION_LIMIT_CHAT": "2",
        "ADMISSION_MAX_WAIT_MS": "20",
        "ADMISSION_RETRY_AFTER_MAX_S": "2",
    }
    with gateway_process(env) as gateway:
        yield gateway


@pytest.mark.parametrize("processes", [1, 2])
async def test_every_flow_succeeds_through_a_gateway_that_sheds(tight_gateway: GatewayProcess, processes: int) -> None:
    report = await stress(tight_gateway.url, users=30, time_limit_s=120, processes=processes)
    result = report.as_json()
    assert result["client_processes"] == processes
    assert result["client_loop_lag_ms"]["n"] > 0
    assert result["succeeded_pct"] == 100.0, result["failures"]
    assert result["succeeded"] == 30
    # Thirty users at once against one login slot and a 20 ms wait: some were refused.
    assert result["shed"]["login"] > 0, result["shed"]
    assert result["shed"]["total"] == sum(result["shed"][step] for step in ("login", "session", "chat"))
    assert set(result["accepted_p99_ms"]) == {"login", "session", "chat", "overall"}
    assert all(value is not None for value in result["accepted_p99_ms"].values())
    assert result["accepted_ms"]["chat"]["n"] == 30
