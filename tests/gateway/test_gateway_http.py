"""The gateway over real HTTP in front of stand-in gRPC upstreams on loopback.

The stand-ins (conftest.py) let each test choose the upstream's behaviour — fail at once, fail
midway through a stream, hang until cancelled — which the real services cannot be made to do
on demand.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
from grpc_health.v1 import health_pb2

from tests.support.gateway import GatewayUrl, serve_in_process, sse_events, standin_settings
from tests.support.standin import Standin
from tests.support.waiting import eventually


async def test_unary_call_is_transcoded_with_proto_names_and_timestamps(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/sessions", json={"name": "trip"}, headers={"Authorization": "Bearer good"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "session": {
            "session_id": "s-1",
            "name": "trip",
            "created_at": "2023-11-14T22:13:20Z",
            "updated_at": "2023-11-14T22:13:20Z",
            "user_id": "",
        }
    }


async def test_query_parameters_reach_the_upstream(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sessions", params={"page_size": "7", "pageToken": "abc"})
    assert response.status_code == 200
    assert response.json()["next_page_token"] == "7|abc"
    assert [s["session_id"] for s in response.json()["sessions"]] == ["a", "b"]


async def test_upstream_rich_error_becomes_status_json_with_its_http_code(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sessions/missing")
    assert response.status_code == 404
    assert response.json() == {
        "code": 5,
        "message": "no such session",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SESSION_NOT_FOUND",
                "domain": "agentmesh",
                "metadata": {"k": "v"},
            }
        ],
    }


async def test_upstream_unauthenticated_is_401_with_www_authenticate(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/sessions", json={}, headers={"Authorization": "Bearer bad"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["details"][0]["reason"] == "TOKEN_INVALID"


async def test_plain_status_without_details_maps_too(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/sessions/conflict")
    assert response.status_code == 409
    assert response.json() == {"code": 6, "message": "exists", "details": []}


async def test_unreachable_upstream_is_503(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/memories")
    assert response.status_code == 503
    assert response.json()["code"] == 14


async def test_headers_are_forwarded_as_metadata(client: httpx.AsyncClient, standin: Standin) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await client.get(
        "/v1/sessions/forward",
        headers={
            "Authorization": "Bearer tok",
            "traceparent": traceparent,
            "tracestate": "vendor=1",
            "x-request-id": "req-123",
            "Grpc-Metadata-Tenant": "acme",
            "Grpc-Metadata-Grpc-Status": "0",
            "X-Forwarded-For": "6.6.6.6",
            "Cookie": "secret=1",
        },
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-123"
    seen = standin.recorder.metadata[-1]
    assert seen["authorization"] == "Bearer tok"
    assert seen["traceparent"] == traceparent
    assert seen["tracestate"] == "vendor=1"
    assert seen["x-request-id"] == "req-123"
    assert seen["tenant"] == "acme"
    # The peer is not a trusted proxy, so its X-Forwarded-For claim is replaced by its address.
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert "cookie" not in seen


async def test_request_id_is_generated_when_missing(client: httpx.AsyncClient, standin: Standin) -> None:
    response = await client.get("/v1/sessions/rid")
    generated = response.headers["x-request-id"]
    assert len(generated) == 32
    assert standin.recorder.metadata[-1]["x-request-id"] == generated


async def test_client_timeout_header_sets_the_upstream_deadline(client: httpx.AsyncClient, standin: Standin) -> None:
    # gRPC rounds the deadline it sends up to its timer granularity, hence the small slack.
    await client.get("/v1/sessions/deadline", headers={"grpc-timeout": "2S"})
    assert 1 < standin.recorder.time_remaining[-1] <= 2.05
    await client.get("/v1/sessions/deadline", headers={"x-request-timeout": "1.5"})
    assert 0.5 < standin.recorder.time_remaining[-1] <= 1.55
    await client.get("/v1/sessions/deadline")
    assert 2 < standin.recorder.time_remaining[-1] <= 30.5


async def test_deadline_exceeded_is_504(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sessions/slow", headers={"grpc-timeout": "200m"})
    assert response.status_code == 504
    assert response.json()["code"] == 4


async def test_requested_deadline_is_capped(standin: Standin) -> None:
    settings = standin_settings(standin.address, gateway_max_timeout=1.0)
    async with serve_in_process(settings) as url, httpx.AsyncClient(base_url=url) as http:
        await http.get("/v1/sessions/capped", headers={"x-request-timeout": "100"})
    assert 0 < standin.recorder.time_remaining[-1] <= 1.05


async def test_stream_as_sse_sends_one_event_per_message(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/sessions/s1:stream",
        json={"message": {"role": "user", "content": "<b>you</b>"}},
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["message"] * 5
    payloads = [json.loads(data) for _, data in events]
    assert payloads[0]["started"] == {"run_id": "r-1", "model": "standin"}
    assert [p["token"]["text"] for p in payloads[1:4]] == ["Hel", "lo ", "<b>you</b>"]
    completed = payloads[4]["completed"]["message"]
    assert (completed["role"], completed["content"]) == ("assistant", "Hello <b>you</b>")
    assert payloads[4]["completed"]["latency_ms"] == "12345678901"


async def test_stream_without_sse_is_newline_delimited_results(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/sessions/s1:stream", json={"message": {"role": "user", "content": "x"}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == 5
    assert all(set(line) == {"result"} for line in lines)
    assert lines[-1]["result"]["completed"]["model"] == "standin"


async def test_stream_failing_midway_ends_with_an_error_event(client: httpx.AsyncClient) -> None:
    body = {"message": {"role": "user", "content": "x"}}
    sse = await client.post("/v1/sessions/fail-midway:stream", json=body, headers={"Accept": "text/event-stream"})
    assert sse.status_code == 200
    events = sse_events(sse.text)
    assert [name for name, _ in events[:-1]] == ["message"] * 4
    name, data = events[-1]
    assert name == "error"
    error = json.loads(data)
    assert (error["code"], error["message"]) == (13, "model exploded")
    assert error["details"][0]["reason"] == "LLM_FAILED"

    ndjson = await client.post("/v1/sessions/fail-midway:stream", json=body)
    lines = [json.loads(line) for line in ndjson.text.splitlines()]
    assert len(lines) == 5
    assert lines[-1]["error"]["code"] == 13


async def test_stream_failing_before_the_first_message_keeps_its_http_status(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/sessions/missing:stream",
        json={"message": {"role": "user", "content": "x"}},
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 404
    assert response.json()["details"][0]["reason"] == "SESSION_NOT_FOUND"


async def test_idle_sse_stream_sends_heartbeats_and_disconnect_cancels_the_upstream(
    standin_gateway: str, standin: Standin
) -> None:
    standin.recorder.stream_cancelled.clear()
    standin.recorder.stream_started.clear()
    async with (
        httpx.AsyncClient(base_url=standin_gateway, timeout=10) as http,
        http.stream(
            "POST",
            "/v1/sessions/hang:stream",
            json={"message": {"role": "user", "content": "x"}},
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        assert response.status_code == 200
        received = ""
        async for chunk in response.aiter_text():
            received += chunk
            if ": keep-alive" in received:
                break
        assert received.startswith("data: ")
        assert standin.recorder.stream_started.is_set()
        assert not standin.recorder.stream_cancelled.is_set()
    # Leaving the `stream` block closed the connection: the upstream call must be cancelled.
    await asyncio.wait_for(standin.recorder.stream_cancelled.wait(), timeout=5)


async def test_no_route_is_404_and_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v2/whatever")
    assert missing.status_code == 404
    assert missing.json()["code"] == 5
    wrong = await client.put("/v1/sessions/abc")
    assert wrong.status_code == 405
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}


async def test_unknown_json_field_is_400(client: httpx.AsyncClient) -> None:
    response = await client.patch("/v1/sessions/abc", json={"name": "x", "colour": "red"})
    assert response.status_code == 400
    assert response.json()["code"] == 3


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/sessions", content=b'{"name": "' + b"x" * 1_100_000 + b'"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 413

    async def chunks():
        for _ in range(40):
            yield b"x" * 65536

    streamed = await client.post("/v1/sessions", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


async def test_unsupported_media_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/sessions", content=b"<x/>", headers={"content-type": "application/xml"})
    assert response.status_code == 415


async def test_multipart_form_maps_fields(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/sessions",
        data={"name": "from-form"},
        files={"ignored": ("", b"")},
        headers={"Authorization": "Bearer good"},
    )
    # A file part is refused: only text fields map onto the message.
    assert response.status_code == 400
    form = await client.post("/v1/sessions", data={"name": "from-form"}, headers={"Authorization": "Bearer good"})
    assert form.status_code == 200
    assert form.json()["session"]["name"] == "from-form"


async def test_security_headers_and_cors(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"

    allowed = await client.options(
        "/v1/sessions",
        headers={
            "Origin": "http://localhost:8080",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:8080"
    refused = await client.options(
        "/v1/sessions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    simple = await client.get("/v1/sessions", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


async def test_readyz_says_only_ready_or_not_and_waits_for_signing_keys(client: httpx.AsyncClient) -> None:
    # This gateway's auth upstream is a closed port: it cannot verify tokens, so it is not ready.
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    # Before: {"status": "not ready", "upstreams": {name: status...}, "not_serving": [...]}.
    assert ready.json() == {"status": "not ready"}


async def test_readyz_does_not_depend_on_every_upstream(standin: Standin) -> None:
    # Auth answers (the keys load); memory and evals are closed ports and the agent is NOT_SERVING.
    settings = standin_settings(standin.address, auth_addr=standin.address)
    await standin.health.set("agentmesh.agent.v1.AgentService", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        async with serve_in_process(settings) as url, httpx.AsyncClient(base_url=url) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready"}
            # The detail is on the metrics port, once the background check has run.
            async with httpx.AsyncClient(base_url=url.metrics_url) as admin:

                async def checked() -> dict:
                    detail = (await admin.get("/upstreamz")).json()
                    assert detail["checked_at"], "the gateway has not checked its upstreams yet"
                    return detail

                detail = await eventually(checked, timeout_s=5)
                upstreams = detail["upstreams"]
                assert upstreams["agentmesh.agent.v1.AgentService"]["status"] == "NOT_SERVING"
                assert upstreams["agentmesh.sessions.v1.SessionService"]["status"] == "SERVING"
                assert upstreams["agentmesh.evals.v1.EvalService"]["status"].startswith("UNAVAILABLE")
                assert upstreams["agentmesh.sessions.v1.SessionService"]["address"] == standin.address
                assert detail["jwks"]["keys"] == 1
                text = (await admin.get("/metrics")).text
            assert 'gateway_upstream_up{upstream="agent"} 0.0' in text
            assert 'gateway_upstream_up{upstream="sessions"} 1.0' in text
            # Not on the public port any more.
            assert (await http.get("/upstreamz")).status_code == 404
    finally:
        await standin.health.set("agentmesh.agent.v1.AgentService", health_pb2.HealthCheckResponse.SERVING)


async def test_metrics_are_on_their_own_port_labelled_by_route_template(
    client: httpx.AsyncClient, standin_gateway: GatewayUrl
) -> None:
    unique = uuid.uuid4().hex
    await client.get(f"/v1/sessions/{unique}")
    await client.get(f"/nowhere/{unique}")
    public = await client.get("/metrics")
    assert public.status_code == 404
    text = httpx.get(f"{standin_gateway.metrics_url}/metrics").text
    assert unique not in text
    assert 'http_requests_total{method="GET",route="/v1/sessions/{session_id}",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert 'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/sessions/{session_id}"' in text


async def test_openapi_and_docs_are_served_locally(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert '<script src="/static/docs.js"' in docs.text
    assert "http://" not in docs.text and "https://" not in docs.text
    script = await client.get("/static/docs.js")
    assert script.status_code == 200
    assert "innerHTML" not in script.text
