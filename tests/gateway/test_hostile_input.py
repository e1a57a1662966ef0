"""Malformed input of every kind answers a 4xx google.rpc.Status, never a 500.

Against the in-process gateway and stand-in upstreams (conftest.py). The "before" of each case is
in its comment; the same inputs through the real mesh are in test_mesh_hostile.py.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.gateway import upgrade_status
from tests.support.standin import Standin


def reason(response: httpx.Response) -> str:
    details = response.json().get("details", [])
    return details[0].get("reason", "") if details else ""


def assert_status_400(response: httpx.Response, expected_reason: str | None = None) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 3 and set(body) == {"code", "message", "details"}, body
    if expected_reason is not None:
        assert reason(response) == expected_reason, body


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,  # before: RecursionError, 500 with a traceback in the log
        b'{"name": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"name": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}",
        b'{"name": "a", "name": "b"}',  # duplicate keys: which one did the client mean?
        b'{"name": NaN}',
        b'{"name": ' + b"1" * 5000 + b"}",  # before: ValueError (int digit limit), 500
        b"\xff\xfe{",
        b'{"name": "\\ud800"}',  # a lone surrogate
        b"",
    ],
)
async def test_malformed_json_bodies_are_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/v1/sessions", content=body, headers=JSON)
    if body == b"":
        # An empty body is an empty request message.
        assert response.status_code in (200, 401), response.text
        return
    assert_status_400(response)


async def test_nul_in_any_string_is_refused_before_the_upstream(client: httpx.AsyncClient, standin: Standin) -> None:
    seen = len(standin.recorder.metadata)
    response = await client.post("/v1/sessions", json={"name": "a\u0000b"}, headers={"Authorization": "Bearer good"})
    assert_status_400(response, "INVALID_TEXT")
    assert "name" in response.json()["message"]
    stream = await client.post("/v1/sessions/s1:stream", json={"message": {"role": "user", "content": "\u0000"}})
    assert_status_400(stream, "INVALID_TEXT")
    assert "message.content" in stream.json()["message"]
    query = await client.get("/v1/sessions", params={"page_token": "a\u0000"})
    assert_status_400(query, "INVALID_TEXT")
    path = await client.get("/v1/sessions/a%00b")
    assert_status_400(path, "INVALID_TEXT")
    assert len(standin.recorder.metadata) == seen, "a refused request reached the upstream"


@pytest.mark.parametrize(
    "url",
    [
        "/v1/sessions?page_token=%ff",  # before: UnicodeDecodeError from parse_qsl, 500
        "/v1/sessions?page_size=99999999999",  # int32 out of range
        "/v1/sessions?page_size=%EF%BC%91",  # a full-width digit, which int() would read
        "/v1/sessions?page_size=1e3",
        "/v1/sessions?page_size=" + "9" * 5000,
        "/v1/sessions?nope=1",
        "/v1/sessions?" + "&".join(f"page_token={i}" for i in range(300)),
        "/v1/sessions/%ff",  # before: decoded with replacement characters
        "/v1/sessions/%ff%fe:stream",
    ],
)
async def test_malformed_queries_and_paths_are_400(client: httpx.AsyncClient, url: str) -> None:
    method = "POST" if url.endswith(":stream") else "GET"
    response = await client.request(method, url, json={} if method == "POST" else None)
    assert_status_400(response)


@pytest.mark.parametrize(
    ("body", "field", "expected"),
    [
        # Before: 'Message type "agentmesh.agent.v1.Message" has no field named "h"'.
        ({"message": "hello"}, "message", 'an object with "role" and "content"'),
        ({"message": ["hello"]}, "message", 'an object with "role" and "content"'),
        ({"message": {"role": "user", "content": "x"}, "on_disconnect": {}}, "on_disconnect", "one of"),
        ({"message": {"role": "user", "content": 5}}, "message.content", "a string"),
        ({"message": {"role": "user", "content": "x"}, "multitask_strategy": 42}, "multitask_strategy", "one of"),
        ({"message": {"role": "user", "content": "x"}, "multitask_strategy": True}, "multitask_strategy", "one of"),
    ],
)
async def test_a_wrong_json_type_names_the_field_and_the_shape(
    client: httpx.AsyncClient, body: dict[str, object], field: str, expected: str
) -> None:
    response = await client.post("/v1/sessions/s1:stream", json=body)
    assert_status_400(response, "INVALID_FIELD_VALUE")
    message = response.json()["message"]
    assert repr(field) in message and expected in message, message
    violation = response.json()["details"][1]
    assert violation["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert violation["fieldViolations"][0]["field"] == field


async def test_enum_short_names_are_accepted(client: httpx.AsyncClient) -> None:
    body = {"message": {"role": "user", "content": "x"}, "multitask_strategy": "REJECT"}
    response = await client.post("/v1/sessions/s1:stream", json=body)
    assert response.status_code == 200, response.text


async def test_wrong_types_for_scalars_are_400(client: httpx.AsyncClient) -> None:
    for body in ({"name": 5}, {"name": {"a": 1}}, {"name": ["x"]}, {"name": True}):
        assert_status_400(await client.patch("/v1/sessions/abc", json=body), "INVALID_FIELD_VALUE")


async def test_headers_cannot_crash_the_gateway(client: httpx.AsyncClient) -> None:
    for name, value in (
        (b"grpc-timeout", b"99999999999H"),
        (b"x-request-timeout", b"nan"),
        (b"x-request-timeout", b"-inf"),
        (b"accept", b"\xff" * 100),
        (b"authorization", b"Bearer \xff\xfe"),
        (b"x-forwarded-for", b"[::1, ::::, 999.1.1.1"),
        (b"content-type", b"application/json; charset=\xff"),
        (b"host", b"["),  # urlsplit raises on it, if anything builds request.url
        (b"grpc-metadata-x", b"\xff"),
    ):
        response = await client.get("/v1/sessions/abc", headers=[(name, value)])
        assert response.status_code < 500, (name, value, response.text)
        assert set(response.json()) >= {"session"} or set(response.json()) == {"code", "message", "details"}


async def test_two_authorization_headers_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/v1/sessions/abc", headers=[("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    )
    assert_status_400(response, "MALFORMED_HEADER")


async def test_grpc_metadata_authorization_is_not_a_credential(client: httpx.AsyncClient, standin: Standin) -> None:
    # Before: forwarded as a second `authorization`; the services read the last one.
    await client.get("/v1/sessions/abc", headers={"Grpc-Metadata-Authorization": "Bearer smuggled"})
    assert "authorization" not in standin.recorder.metadata[-1]
    await client.get(
        "/v1/sessions/abc", headers={"Authorization": "Bearer real", "grpc-metadata-AUTHORIZATION": "Bearer smuggled"}
    )
    assert standin.recorder.metadata[-1]["authorization"] == "Bearer real"


async def test_malformed_forms_are_400(client: httpx.AsyncClient) -> None:
    bad_utf8 = await client.post(
        "/v1/sessions", content=b"name=%ff", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert_status_400(bad_utf8, "MALFORMED_FORM")
    multipart = await client.post(
        "/v1/sessions",
        content=b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\n\xff\xfe\r\n--x--\r\n',
        headers={"content-type": "multipart/form-data; boundary=x", "authorization": "Bearer good"},
    )
    # Starlette's multipart parser falls back to Latin-1 for undecodable bytes: odd text, no crash.
    assert multipart.status_code == 200, multipart.text
    no_boundary = await client.post("/v1/sessions", content=b"a", headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 400, no_boundary.text


async def test_docs_slash_redirect_is_relative_whatever_the_host(client: httpx.AsyncClient) -> None:
    # Before: Starlette's slash redirect answered `Location: http://evil.example/docs`.
    response = await client.get("/docs/", headers={"host": "evil.example"}, follow_redirects=False)
    assert response.status_code in (301, 307, 308)
    assert response.headers["location"] == "/docs"
    for path in ("/openapi.json/", "/healthz/", "/static"):
        other = await client.get(path, headers={"host": "evil.example"}, follow_redirects=False)
        assert "evil.example" not in other.headers.get("location", ""), path


async def test_every_error_body_is_a_status(client: httpx.AsyncClient) -> None:
    for method, url in (("GET", "/nope"), ("PUT", "/v1/sessions/x"), ("GET", "/static/missing.js")):
        response = await client.request(method, url)
        assert response.status_code in (404, 405)
        assert set(json.loads(response.text)) == {"code", "message", "details"}


async def test_a_websocket_upgrade_is_refused_not_a_crash(standin_gateway: str) -> None:
    # Before: an AssertionError in Request(), answered 500 with a traceback in the log.
    for path in ("/v1/sessions", "/docs", "/nope"):
        status_line = await upgrade_status(standin_gateway, path)
        assert b" 500 " not in status_line and status_line.startswith(b"HTTP/1.1 4"), (path, status_line)
