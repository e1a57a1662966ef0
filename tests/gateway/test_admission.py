"""Admission control: the limiter itself, a stream holding its slot, upstream retry hints, and a
real gateway process in front of the mesh shedding a burst of logins with 503 and Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from gateway.admission import AdmissionControl, ClassGate, Overloaded
from gateway.errors import GatewayError, error_response, make_status, status_response
from tests.support.gateway import GatewayProcess, gateway_process, serve_in_process, standin_settings
from tests.support.metrics import metric, scrape
from tests.support.standin import Standin
from tests.support.users import MeshUser, unique_email
from tests.support.waiting import eventually


async def in_line(admission: AdmissionControl, route_class: str, count: int) -> None:
    async def check() -> None:
        assert admission.gate(route_class).waiting == count

    await eventually(check, timeout_s=2, interval_s=0.005)


# ---- the limiter ----


async def test_a_waiting_request_is_admitted_when_a_slot_frees_up_in_time() -> None:
    admission = AdmissionControl({"login": 1}, max_wait_ms=1000, retry_after_max_s=30)
    first = await admission.admit("login")
    second = asyncio.create_task(admission.admit("login"))
    await in_line(admission, "login", 1)
    assert not second.done()
    first.release()
    slot = await asyncio.wait_for(second, 1)
    # The slot passed from one request to the next: still one in flight, nobody waiting.
    assert admission.gate("login").in_flight == 1 and admission.gate("login").waiting == 0
    slot.release()
    slot.release()  # a second release gives nothing back twice
    assert admission.gate("login").in_flight == 0


async def test_a_request_still_waiting_when_the_time_is_up_is_shed() -> None:
    shed: list[str] = []
    admission = AdmissionControl({"login": 1}, max_wait_ms=50, retry_after_max_s=30, on_shed=shed.append)
    held = await admission.admit("login")
    began = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        await admission.admit("login")
    assert time.monotonic() - began >= 0.045
    assert refused.value.route_class == "login" and refused.value.limit == 1
    assert refused.value.retry_after_s >= 1
    assert shed == ["login"]
    assert admission.gate("login").waiting == 0
    held.release()
    # Once the slot is back, the next request is admitted at once.
    (await admission.admit("login")).release()


async def test_a_released_slot_goes_to_the_oldest_waiter_not_a_newcomer() -> None:
    admission = AdmissionControl({"chat": 1}, max_wait_ms=1000, retry_after_max_s=30)
    held = await admission.admit("chat")
    waiter = asyncio.create_task(admission.admit("chat"))
    await in_line(admission, "chat", 1)
    held.release()
    newcomer = asyncio.create_task(admission.admit("chat"))
    handed = await asyncio.wait_for(waiter, 1)
    await in_line(admission, "chat", 1)  # the newcomer queues behind
    assert not newcomer.done()
    handed.release()
    (await asyncio.wait_for(newcomer, 1)).release()


async def test_a_cancelled_waiter_leaves_no_slot_behind() -> None:
    admission = AdmissionControl({"chat": 1}, max_wait_ms=1000, retry_after_max_s=30)
    held = await admission.admit("chat")
    waiter = asyncio.create_task(admission.admit("chat"))
    await in_line(admission, "chat", 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    gate = admission.gate("chat")
    assert (gate.in_flight, gate.waiting) == (0, 0)


async def test_zero_is_unlimited_and_unnamed_classes_take_the_default_limit() -> None:
    admission = AdmissionControl({"default": 2, "read": 0}, max_wait_ms=0, retry_after_max_s=30)
    reads = [await admission.admit("read") for _ in range(100)]
    assert admission.gate("read").in_flight == 100
    for slot in reads:
        slot.release()
    assert admission.gate("brand_new").limit == 2
    slots = [await admission.admit("brand_new") for _ in range(2)]
    with pytest.raises(Overloaded):
        await admission.admit("brand_new")
    for slot in slots:
        slot.release()


def test_retry_after_grows_with_the_backlog_and_stays_within_its_bounds() -> None:
    gate = ClassGate("login", limit=4, retry_after_max_s=20)
    assert gate.retry_after_s() == 1  # nothing measured, nothing refused: the least there is
    gate.release(2.0)  # one request took 2 s
    gate.in_flight = 4
    first = gate.shed().retry_after_s
    assert 1 <= first <= 20
    for _ in range(200):
        last = gate.shed().retry_after_s
    assert first < last == 20  # capped, however long the line


def test_refused_requests_are_told_to_come_back_spread_at_the_rate_the_class_serves() -> None:
    gate = ClassGate("chat", limit=4, retry_after_max_s=30)
    gate.release(1.0)  # a request holds its slot 1 s: four slots serve four a second
    gate.in_flight = 4
    hints = [gate.shed().retry_after_s for _ in range(40)]
    # Not all at once (they would be refused again): about four per second, in order.
    assert hints == sorted(hints) and hints[-1] == 10
    assert all(hints.count(second) == 4 for second in range(1, 11))
    # A request arriving now is told to come after everyone already due back.
    assert gate.retry_after_s() == 11
    # However many are refused, the schedule runs at most the longest Retry-After ahead, so
    # once the refused have come back (or given up) a new refusal hears a short wait again.
    for _ in range(1000):
        gate.shed()
    assert gate.shed().retry_after_s == 30
    gate._next_return -= 30  # thirty seconds later
    assert gate.shed().retry_after_s == 1


# ---- in front of stand-in upstreams ----


async def test_a_stream_holds_its_slot_until_it_ends(standin: Standin) -> None:
    settings = standin_settings(standin.address, admission_limit_chat_stream=1, admission_max_wait_ms=50)
    body = {"message": {"role": "user", "content": "x"}}
    async with serve_in_process(settings) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        async with http.stream("POST", "/v1/sessions/hang:stream", json=body) as hanging:
            assert hanging.status_code == 200
            # The first event: the turn is under way. The iterator is kept: dropping it would
            # close the response, and with it the connection.
            lines = hanging.aiter_lines()
            assert '"started"' in await anext(lines)
            samples = await scrape(url.metrics_url.removeprefix("http://"))
            assert metric(samples, "gateway_requests_in_flight", route_class="chat_stream") == 1
            refused = await http.post("/v1/sessions/s1:stream", json=body)
            assert refused.status_code == 503
            assert refused.json()["details"][0]["reason"] == "OVERLOADED"

        async def released() -> None:
            samples = await scrape(url.metrics_url.removeprefix("http://"))
            assert metric(samples, "gateway_requests_in_flight", route_class="chat_stream") == 0

        # The client hung up: the gateway cancels the upstream call and gives the slot back.
        await eventually(released, timeout_s=5)
        served = await http.post("/v1/sessions/s1:stream", json=body)
        assert served.status_code == 200 and '"completed"' in served.text
        await released()
        samples = await scrape(url.metrics_url.removeprefix("http://"))
        assert metric(samples, "gateway_requests_shed_total", route_class="chat_stream") == 1


# ---- upstream retry hints ----


def test_an_upstream_retry_hint_in_error_info_becomes_retry_after() -> None:
    def status(code: grpc.StatusCode, *details: object) -> httpx.Headers:
        response = status_response(make_status(code, "busy", details))  # type: ignore[arg-type]
        return httpx.Headers(dict(response.headers))

    hint = error_details_pb2.ErrorInfo(reason="BUSY", domain="x", metadata={"retry_after_s": "2.5"})
    assert status(grpc.StatusCode.RESOURCE_EXHAUSTED, hint)["retry-after"] == "3"
    assert status(grpc.StatusCode.UNAVAILABLE, hint)["retry-after"] == "3"
    # Other codes keep their behaviour: no header from metadata alone.
    assert "retry-after" not in status(grpc.StatusCode.INVALID_ARGUMENT, hint)
    bad = error_details_pb2.ErrorInfo(reason="BUSY", domain="x", metadata={"retry_after_s": "soon"})
    assert "retry-after" not in status(grpc.StatusCode.UNAVAILABLE, bad)
    # RetryInfo, as before, wins over the metadata.
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=7))
    assert status(grpc.StatusCode.RESOURCE_EXHAUSTED, hint, retry)["retry-after"] == "7"
    # The gateway's own refusals keep the headers they set.
    own = GatewayError(grpc.StatusCode.UNAVAILABLE, "x", headers={"Retry-After": "4"})
    assert error_response(own).headers["retry-after"] == "4"


# ---- a real gateway process in front of the mesh ----


@pytest.fixture(scope="module")
def tight_gateway(mesh_env: dict[str, str]) -> Iterator[GatewayProcess]:
    env = {
        **mesh_env,
        "RATE_LIMIT_ENABLED": "false",
        "ADMISSION_LIMIT_LOGIN": "1",
        "ADMISSION_MAX_WAIT_MS": "50",
        "ADMISSION_RETRY_AFTER_MAX_S": "5",
    }
    with gateway_process(env) as gateway:
        yield gateway


async def test_a_burst_of_logins_past_the_limit_is_shed_with_503_and_retry_after(
    tight_gateway: GatewayProcess,
) -> None:
    email = unique_email("admission")
    credentials = {"email": email, "password": MeshUser.PASSWORD}
    metrics_addr = tight_gateway.metrics_url.removeprefix("http://")
    async with httpx.AsyncClient(base_url=tight_gateway.url, timeout=30) as http:
        assert (await http.post("/v1/auth/register", json=credentials)).status_code == 200
        before = metric(await scrape(metrics_addr), "gateway_requests_shed_total", route_class="login")
        burst = await asyncio.gather(*(http.post("/v1/auth/login", json=credentials) for _ in range(30)))
        statuses = [response.status_code for response in burst]
        assert set(statuses) <= {200, 503}, statuses
        shed = [response for response in burst if response.status_code == 503]
        assert shed and len(shed) < len(burst), statuses
        for response in shed:
            assert 1 <= int(response.headers["retry-after"]) <= 5
            assert response.headers["content-type"] == "application/json"
            body = response.json()
            assert body["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
            info = body["details"][0]
            assert info["reason"] == "OVERLOADED" and info["metadata"]["route_class"] == "login"
        for response in burst:
            if response.status_code == 200:
                assert response.json()["access_token"]
        after = metric(await scrape(metrics_addr), "gateway_requests_shed_total", route_class="login")
        assert after - before == len(shed)
        # The form login (OAuth2) is refused in OAuth2's words, with the same Retry-After.
        form = {"grant_type": "password", "username": email, "password": MeshUser.PASSWORD}
        forms = await asyncio.gather(*(http.post("/v1/auth/login", data=form) for _ in range(30)))
        refused_forms = [response for response in forms if response.status_code == 503]
        assert refused_forms and {r.json()["error"] for r in refused_forms} == {"temporarily_unavailable"}
        assert all(int(r.headers["retry-after"]) >= 1 for r in refused_forms)
        # After the burst every login is admitted again, one at a time.
        for _ in range(5):
            response = await http.post("/v1/auth/login", json=credentials)
            assert response.status_code == 200, response.text
        samples = await scrape(metrics_addr)
        assert metric(samples, "gateway_requests_in_flight", route_class="login") == 0
