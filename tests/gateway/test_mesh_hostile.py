"""Hostile input through the real gateway process in front of the real services.

Each case names what it did before the fix. Logs are read back from the files the processes write:
no traceback, no user content, no SQL parameters.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from meshctl.mesh import Mesh
from tests.support.gateway import GatewayProcess, free_port, gateway_process, upgrade_status
from tests.support.waiting import eventually_sync

PASSWORD = "Corr3ct-Horse!"


@pytest.fixture
async def http(mesh_gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mesh_gateway.url, timeout=60) as client:
        yield client


async def register(http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    email = f"hostile-{uuid.uuid4().hex[:12]}@example.com"
    response = await http.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return email, {"Authorization": f"Bearer {response.json()['tokens']['access_token']}"}


def all_logs(mesh: Mesh, gateway: GatewayProcess) -> str:
    paths = list(Path(mesh.log_dir).glob("*.log"))
    if gateway.log_path is not None:
        paths.append(gateway.log_path)
    return "\n".join(path.read_text(errors="replace") for path in paths)


def reason(response: httpx.Response) -> str:
    details = response.json().get("details", [])
    return details[0].get("reason", "") if details else ""


async def test_nested_json_is_400_without_a_traceback(http: httpx.AsyncClient, mesh_gateway: GatewayProcess) -> None:
    # Before: 500, and a RecursionError traceback in the gateway's log.
    _, auth = await register(http)
    response = await http.post(
        "/v1/sessions", content=b"[" * 100_000, headers={**auth, "content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert reason(response) == "MALFORMED_JSON"
    assert mesh_gateway.log_path is not None
    log = mesh_gateway.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "RecursionError" not in log


@pytest.mark.parametrize("token", ["%ff", "W1tdLFtdXQ", "WyIyMDI0LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgWyJ5Il1d", "%00"])
async def test_bad_page_tokens_are_400_on_every_list_route(http: httpx.AsyncClient, token: str) -> None:
    # Before: %ff was a 500 in the gateway; a token decoding to a list of lists was an uncaught
    # AttributeError (INTERNAL) in the sessions and memory services.
    _, auth = await register(http)
    for route in ("/v1/sessions", "/v1/memories", "/v1/evals/scores"):
        response = await http.get(f"{route}?page_token={token}", headers=auth)
        if response.status_code == 503:
            continue  # that service is not part of this mesh
        assert response.status_code == 400, (route, response.text)
        assert reason(response) in ("PAGE_TOKEN_INVALID", "MALFORMED_QUERY", "INVALID_TEXT"), response.text


async def test_nul_anywhere_is_400_nothing_stored_and_nothing_logged(
    http: httpx.AsyncClient, mesh: Mesh, mesh_gateway: GatewayProcess
) -> None:
    # Before: INTERNAL (500) from Postgres, with the statement's parameters (the user's text) logged.
    _, auth = await register(http)
    secret = f"secret-{uuid.uuid4().hex}"
    refused = await http.post("/v1/sessions", json={"name": f"{secret}\u0000"}, headers=auth)
    assert refused.status_code == 400 and reason(refused) == "INVALID_TEXT", refused.text
    assert (await http.get("/v1/sessions", headers=auth)).json()["sessions"] == []

    session = (await http.post("/v1/sessions", json={"name": "ok"}, headers=auth)).json()["session"]
    chat = await http.post(
        f"/v1/sessions/{session['session_id']}:chat",
        json={"message": {"role": "user", "content": f"{secret}\u0000"}},
        headers=auth,
    )
    assert chat.status_code == 400 and reason(chat) == "INVALID_TEXT", chat.text
    history = await http.get(f"/v1/sessions/{session['session_id']}/messages", headers=auth)
    if history.status_code != 503:
        assert history.json()["messages"] == []

    memory = await http.post("/v1/memories", json={"facts": [f"{secret}\u0000"]}, headers=auth)
    assert memory.status_code == 400 and reason(memory) == "INVALID_TEXT", memory.text
    listed = await http.get("/v1/memories", headers=auth)
    if listed.status_code != 503:
        assert listed.json()["memories"] == []

    trace = {"trace": {"trace_id": str(uuid.uuid4()), "session_id": session["session_id"], "output": secret + "\0"}}
    recorded = await http.post("/v1/evals/traces", json=trace, headers=auth)
    assert recorded.status_code == 400 and reason(recorded) == "INVALID_TEXT", recorded.text

    renamed = await http.patch(f"/v1/sessions/{session['session_id']}", json={"name": f"{secret}\0"}, headers=auth)
    assert renamed.status_code == 400, renamed.text
    assert (await http.get(f"/v1/sessions/{session['session_id']}", headers=auth)).json()["session"]["name"] == "ok"

    assert secret not in all_logs(mesh, mesh_gateway)


async def test_grpc_metadata_authorization_is_ignored(http: httpx.AsyncClient) -> None:
    # Before: forwarded as a second `authorization`, which the services read (the last one wins)
    # while the rate limiter keyed on the first: one user's requests counted against another.
    email_a, auth_a = await register(http)
    _, auth_b = await register(http)
    alone = await http.get("/v1/auth/me", headers={"Grpc-Metadata-Authorization": auth_a["Authorization"]})
    assert alone.status_code == 401, alone.text
    both = await http.get("/v1/auth/me", headers={**auth_a, "grpc-metadata-AUTHORIZATION": auth_b["Authorization"]})
    assert both.status_code == 200, both.text
    assert both.json()["email"] == email_a


async def test_oauth2_form_login_errors_are_oauth2_and_json_keeps_status(http: httpx.AsyncClient) -> None:
    # Before: google.rpc.Status bodies ({"code": 16, ...} with 401) for an OAuth2 client.
    email, _ = await register(http)
    wrong = await http.post(
        "/v1/auth/login", data={"grant_type": "password", "username": email, "password": "Wr0ng-password!"}
    )
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["error"] == "invalid_grant" and wrong.json()["error_description"]
    assert set(wrong.json()) == {"error", "error_description"}
    assert wrong.headers["cache-control"] == "no-store"
    grant = await http.post(
        "/v1/auth/login", data={"grant_type": "client_credentials", "username": email, "password": PASSWORD}
    )
    assert (grant.status_code, grant.json()["error"]) == (400, "unsupported_grant_type"), grant.text
    malformed = await http.post("/v1/auth/login", data={"grant_type": "password", "colour": "red"})
    assert (malformed.status_code, malformed.json()["error"]) == (400, "invalid_request"), malformed.text
    ok = await http.post("/v1/auth/login", data={"grant_type": "password", "username": email, "password": PASSWORD})
    assert ok.status_code == 200 and ok.json()["token_type"].lower() == "bearer"
    assert ok.headers["cache-control"] == "no-store"
    as_json = await http.post("/v1/auth/login", json={"email": email, "password": "Wr0ng-password!"})
    assert as_json.status_code == 401 and as_json.json()["code"] == 16


async def test_a_string_message_says_what_a_message_is(http: httpx.AsyncClient) -> None:
    # Before: 'Message type "agentmesh.agent.v1.Message" has no field named "h"'.
    _, auth = await register(http)
    session = (await http.post("/v1/sessions", json={}, headers=auth)).json()["session"]
    response = await http.post(f"/v1/sessions/{session['session_id']}:chat", json={"message": "hello"}, headers=auth)
    assert response.status_code == 400
    message = response.json()["message"]
    assert "'message'" in message and '"role"' in message and '"content"' in message, message
    assert 'named "h"' not in message


async def test_readyz_says_ready_without_details_and_survives_an_evals_outage(mesh_env: dict[str, str]) -> None:
    # Before: /readyz listed every upstream's address status and answered 503 when any one of the
    # five was down, so an evals outage took every gateway out of the load balancer.
    env = {**mesh_env, "EVALS_ADDR": f"127.0.0.1:{free_port()}"}  # nothing listens there
    with gateway_process(env) as gateway:
        ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready"}
        assert "127.0.0.1" not in ready.text
        assert httpx.get(f"{gateway.url}/metrics", timeout=10).status_code == 404
        metrics = httpx.get(f"{gateway.metrics_url}/metrics", timeout=10).text
        assert "http_requests_total" in metrics

        def checked() -> dict:
            detail = httpx.get(f"{gateway.metrics_url}/upstreamz", timeout=10).json()
            assert detail["checked_at"], "the gateway has not checked its upstreams yet"
            return detail

        detail = eventually_sync(checked, timeout_s=30, interval_s=0.1)
        assert detail["upstreams"]["agentmesh.evals.v1.EvalService"]["status"].startswith("UNAVAILABLE")
        assert detail["upstreams"]["agentmesh.auth.v1.AuthService"]["status"] == "SERVING"
        metrics = httpx.get(f"{gateway.metrics_url}/metrics", timeout=10).text
        assert 'gateway_upstream_up{upstream="evals"} 0.0' in metrics


async def test_readyz_is_not_ready_without_signing_keys(mesh_env: dict[str, str]) -> None:
    env = {**mesh_env, "AUTH_ADDR": f"127.0.0.1:{free_port()}"}
    with gateway_process(env) as gateway:
        ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json() == {"status": "not ready"}


async def test_docs_redirect_is_relative(http: httpx.AsyncClient) -> None:
    # Before: `Location: http://evil.example/docs/`, built from the Host header.
    response = await http.get("/docs/", headers={"host": "evil.example"}, follow_redirects=False)
    assert response.headers["location"] == "/docs"


async def test_a_websocket_upgrade_is_not_a_server_error(mesh_gateway: GatewayProcess) -> None:
    for path in ("/v1/sessions", "/docs"):
        status_line = await upgrade_status(mesh_gateway.url, path)
        assert status_line.startswith(b"HTTP/1.1 ") and b" 5" not in status_line[8:11], (path, status_line)
