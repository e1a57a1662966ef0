"""The seed's HTTP flow through the real gateway process in front of the real services."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.gateway import GatewayProcess, gateway_process, offline_llm_stall, sse_events
from tests.support.waiting import eventually

PASSWORD = "Corr3ct-Horse!"


@pytest.fixture
async def http(mesh_gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mesh_gateway.url, timeout=60) as client:
        yield client


def new_email() -> str:
    return f"gw-{uuid.uuid4().hex[:12]}@example.com"


async def register(http: httpx.AsyncClient, email: str | None = None) -> tuple[str, dict[str, str]]:
    email = email or new_email()
    response = await http.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token = response.json()["tokens"]["access_token"]
    return email, {"Authorization": f"Bearer {token}"}


async def test_register_then_login_with_json_and_with_the_oauth2_form(http: httpx.AsyncClient) -> None:
    email = new_email()
    registered = await http.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 200, registered.text
    body = registered.json()
    assert body["user"]["email"] == email
    assert body["user"]["roles"] == ["user"]
    assert body["tokens"]["token_type"].lower() == "bearer"

    json_login = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert json_login.status_code == 200, json_login.text
    tokens = json_login.json()
    assert set(tokens) >= {"access_token", "refresh_token", "token_type", "expires_in", "expires_at"}
    assert isinstance(tokens["expires_in"], int) and tokens["expires_in"] > 0

    form_login = await http.post(
        "/v1/auth/login", data={"username": email, "password": PASSWORD, "grant_type": "password"}
    )
    assert form_login.status_code == 200, form_login.text
    access = form_login.json()["access_token"]

    me = await http.get("/v1/auth/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 200
    # response_body: "user" -> the User itself, not {"user": ...}
    assert me.json()["email"] == email
    assert set(me.json()) == {"id", "email", "roles", "created_at"}

    refreshed = await http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]


async def test_jwks_is_served_on_both_bindings(http: httpx.AsyncClient) -> None:
    primary = await http.get("/v1/auth/jwks")
    well_known = await http.get("/.well-known/jwks.json")
    assert primary.status_code == well_known.status_code == 200
    assert primary.json() == well_known.json()
    assert primary.json()["keys"][0]["kty"] in ("OKP", "RSA")


async def test_wrong_password_is_401_with_www_authenticate(http: httpx.AsyncClient) -> None:
    email, _ = await register(http)
    response = await http.post("/v1/auth/login", json={"email": email, "password": "Wr0ng-password!"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["code"] == 16


async def test_no_token_is_401_with_www_authenticate(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/sessions")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["code"] == 16
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"


async def test_duplicate_registration_is_409(http: httpx.AsyncClient) -> None:
    email, _ = await register(http)
    again = await http.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert again.status_code == 409
    assert again.json()["code"] == 6


async def test_weak_password_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/auth/register", json={"email": new_email(), "password": "short"})
    assert response.status_code == 400
    assert response.json()["code"] == 3


async def test_gateway_level_errors_on_real_routes(http: httpx.AsyncClient) -> None:
    _, auth = await register(http)
    assert (await http.get("/v1/nothing-here", headers=auth)).status_code == 404
    wrong = await http.put("/v1/sessions", headers=auth)
    assert wrong.status_code == 405
    assert "POST" in wrong.headers["allow"]
    unknown = await http.post("/v1/sessions", json={"title": "x"}, headers=auth)
    assert unknown.status_code == 400
    too_big = await http.post(
        "/v1/sessions",
        content=b'{"name":"' + b"x" * 2_000_000 + b'"}',
        headers={**auth, "content-type": "application/json"},
    )
    assert too_big.status_code == 413
    wrong_type = await http.post("/v1/sessions", content=b"name", headers={**auth, "content-type": "text/plain"})
    assert wrong_type.status_code == 415


async def test_create_list_get_rename_session(http: httpx.AsyncClient) -> None:
    _, auth = await register(http)
    created = await http.post("/v1/sessions", json={"name": "first"}, headers=auth)
    assert created.status_code == 200, created.text
    session = created.json()["session"]
    session_id = session["session_id"]
    assert session["name"] == "first"

    listed = await http.get("/v1/sessions", params={"page_size": 10}, headers=auth)
    assert listed.status_code == 200
    assert [s["session_id"] for s in listed.json()["sessions"]] == [session_id]
    assert listed.json()["next_page_token"] == ""

    renamed = await http.patch(f"/v1/sessions/{session_id}", json={"name": "renamed"}, headers=auth)
    assert renamed.status_code == 200
    assert renamed.json()["session"]["name"] == "renamed"
    fetched = await http.get(f"/v1/sessions/{session_id}", headers=auth)
    assert fetched.json()["session"]["name"] == "renamed"


async def test_deleted_session_is_gone(http: httpx.AsyncClient) -> None:
    # DeleteSession also deletes the conversation in the agent service, so it needs the agent.
    _, auth = await register(http)
    session_id = (await http.post("/v1/sessions", json={}, headers=auth)).json()["session"]["session_id"]
    deleted = await http.delete(f"/v1/sessions/{session_id}", headers=auth)
    assert deleted.status_code == 200
    assert deleted.json() == {}
    gone = await http.get(f"/v1/sessions/{session_id}", headers=auth)
    assert gone.status_code == 404


async def test_another_users_session_is_404(http: httpx.AsyncClient) -> None:
    _, owner = await register(http)
    _, stranger = await register(http)
    session_id = (await http.post("/v1/sessions", json={"name": "mine"}, headers=owner)).json()["session"]["session_id"]
    for method, path in (
        ("GET", f"/v1/sessions/{session_id}"),
        ("PATCH", f"/v1/sessions/{session_id}"),
        ("DELETE", f"/v1/sessions/{session_id}"),
    ):
        body = {"name": "stolen"} if method == "PATCH" else None
        response = await http.request(method, path, json=body, headers=stranger)
        assert response.status_code == 404, (method, response.text)
    still_there = await http.get(f"/v1/sessions/{session_id}", headers=owner)
    assert still_there.json()["session"]["name"] == "mine"


async def test_request_id_is_echoed(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/auth/jwks", headers={"x-request-id": "trace-me-123"})
    assert response.headers["x-request-id"] == "trace-me-123"


async def test_readyz_is_ready_and_the_metrics_port_reports_every_upstream(
    http: httpx.AsyncClient, mesh_gateway: GatewayProcess
) -> None:
    ready = await http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    async with httpx.AsyncClient(base_url=mesh_gateway.metrics_url, timeout=10) as admin:

        async def checked() -> dict:
            detail = (await admin.get("/upstreamz")).json()
            assert detail["checked_at"], "the gateway has not checked its upstreams yet"
            return detail

        detail = await eventually(checked, timeout_s=30, interval_s=0.1)
    upstreams = detail["upstreams"]
    assert upstreams["agentmesh.auth.v1.AuthService"]["status"] == "SERVING"
    assert upstreams["agentmesh.sessions.v1.SessionService"]["status"] == "SERVING"
    assert set(upstreams) >= {"agentmesh.auth.v1.AuthService", "agentmesh.sessions.v1.SessionService"}


@pytest.fixture(scope="module")
def limited_gateway(mesh_env: dict[str, str]) -> Iterator[GatewayProcess]:
    env = {
        **mesh_env,
        "RATE_LIMIT_LOGIN": "3 per minute",
        "RATE_LIMIT_DEFAULT": "2 per minute",
        "RATE_LIMIT_READ": "2 per minute",
    }
    with gateway_process(env) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def redis_limited_gateway(mesh_env: dict[str, str]) -> Iterator[GatewayProcess]:
    env = {
        **mesh_env,
        "RATE_LIMIT_LOGIN": "3 per minute",
        "RATE_LIMIT_STORAGE_URL": "redis://127.0.0.1:6379/15",
        "RATE_LIMIT_KEY_PREFIX": f"gw-test-{uuid.uuid4().hex}",
    }
    with gateway_process(env) as gateway:
        yield gateway


async def _login_until_limited(url: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        body = {"email": new_email(), "password": "Wr0ng-password!"}
        return [await client.post("/v1/auth/login", json=body) for _ in range(4)]


@pytest.mark.parametrize("gateway_fixture", ["limited_gateway", "redis_limited_gateway"])
async def test_login_rate_limit_gives_429_with_retry_after(
    request: pytest.FixtureRequest, gateway_fixture: str
) -> None:
    gateway: GatewayProcess = request.getfixturevalue(gateway_fixture)
    responses = await _login_until_limited(gateway.url)
    assert [r.status_code for r in responses] == [401, 401, 401, 429]
    limited = responses[-1]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["ratelimit-limit"] == "3"
    assert limited.headers["ratelimit-remaining"] == "0"
    assert limited.json()["details"][0]["reason"] == "RATE_LIMITED"


async def test_rate_limits_are_keyed_by_user_when_the_token_is_valid(limited_gateway: GatewayProcess) -> None:
    async with httpx.AsyncClient(base_url=limited_gateway.url, timeout=30) as client:
        first_user, second_user = [], []
        for bucket in (first_user, second_user):
            email = new_email()
            registered = await client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
            auth = {"Authorization": f"Bearer {registered.json()['tokens']['access_token']}"}
            for _ in range(3):
                bucket.append((await client.get("/v1/sessions", headers=auth)).status_code)
    # Same address, two users: each has its own 2-per-minute budget.
    assert first_user == [200, 200, 429]
    assert second_user == [200, 200, 429]


async def test_the_rate_limit_bucket_is_the_identity_the_services_see(limited_gateway: GatewayProcess) -> None:
    # Before: `Grpc-Metadata-Authorization` became a second `authorization` entry. The limiter keyed
    # on the header, the services on the last metadata entry: B's calls were counted against A.
    async with httpx.AsyncClient(base_url=limited_gateway.url, timeout=30) as client:
        tokens = []
        for _ in range(2):
            registered = await client.post("/v1/auth/register", json={"email": new_email(), "password": PASSWORD})
            tokens.append(registered.json()["tokens"]["access_token"])
        a, b = ({"Authorization": f"Bearer {token}"} for token in tokens)
        named = await client.post("/v1/sessions", json={"name": "a-only"}, headers=a)
        assert named.status_code == 200, named.text
        mixed = {**a, "Grpc-Metadata-Authorization": b["Authorization"]}
        for _ in range(2):
            listed = await client.get("/v1/sessions", headers=mixed)
            assert listed.status_code == 200, listed.text
            assert [s["name"] for s in listed.json()["sessions"]] == ["a-only"]  # the services saw A
        assert (await client.get("/v1/sessions", headers=a)).status_code == 429  # A's budget is spent
        assert (await client.get("/v1/sessions", headers=b)).status_code == 200  # B's is untouched


async def test_chat_stream_history_clear_and_delete(http: httpx.AsyncClient) -> None:
    _, auth = await register(http)
    session_id = (await http.post("/v1/sessions", json={"name": "chat"}, headers=auth)).json()["session"]["session_id"]
    message = {"message": {"role": "user", "content": "Hello there"}}

    chat = await http.post(f"/v1/sessions/{session_id}:chat", json=message, headers=auth)
    assert chat.status_code == 200, chat.text
    turn = chat.json()
    assert [m["role"] for m in turn["messages"]] == ["user", "assistant"]
    assert turn["messages"][1]["content"]

    sse = await http.post(
        f"/v1/sessions/{session_id}:stream", json=message, headers={**auth, "Accept": "text/event-stream"}
    )
    assert sse.status_code == 200
    events = [json.loads(data) for name, data in sse_events(sse.text) if name == "message"]
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "started" and kinds[-1] == "completed"
    assert kinds.count("token") >= 2
    streamed = "".join(e["token"]["text"] for e in events if "token" in e)
    assert streamed == events[-1]["completed"]["message"]["content"]

    ndjson = await http.post(f"/v1/sessions/{session_id}:stream", json=message, headers=auth)
    lines = [json.loads(line) for line in ndjson.text.splitlines()]
    assert len(lines) >= 3
    assert all("result" in line for line in lines)
    assert "completed" in lines[-1]["result"]

    history = await http.get(f"/v1/sessions/{session_id}/messages", headers=auth)
    assert history.status_code == 200
    contents = [(m["role"], m["content"]) for m in history.json()["messages"]]
    assert contents.count(("user", "Hello there")) == 3
    assert len(contents) == 6

    cleared = await http.delete(f"/v1/sessions/{session_id}/messages", headers=auth)
    assert cleared.status_code == 200
    assert (await http.get(f"/v1/sessions/{session_id}/messages", headers=auth)).json()["messages"] == []

    assert (await http.delete(f"/v1/sessions/{session_id}", headers=auth)).status_code == 200
    gone = await http.post(
        f"/v1/sessions/{session_id}:stream", json=message, headers={**auth, "Accept": "text/event-stream"}
    )
    assert gone.status_code == 404


def stream_chat_cancellations(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        wanted = 'grpc_method="StreamChat"' in line and 'grpc_code="CANCELLED"' in line
        if line.startswith("grpc_server_handled_total{") and wanted:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_disconnecting_sse_client_cancels_the_upstream_turn(
    http: httpx.AsyncClient, mesh_gateway: GatewayProcess, agent_metrics_url: str
) -> None:
    llm_root = mesh_gateway.env.get("LLM_BASE_URL", "").removesuffix("/v1")
    if not llm_root:
        pytest.skip("no offline LLM in this mesh (a real LLM is configured)")
    _, auth = await register(http)
    session_id = (await http.post("/v1/sessions", json={}, headers=auth)).json()["session"]["session_id"]
    cancelled_before = stream_chat_cancellations(agent_metrics_url)
    # The model streams two tokens, then goes quiet for 60s: the turn is still running when we leave.
    with offline_llm_stall(llm_root, stall_s=60, after_tokens=2):
        tokens = 0
        async with http.stream(
            "POST",
            f"/v1/sessions/{session_id}:stream",
            # Without it the run goes on after a disconnect (the default), for StreamRun to resume.
            json={"message": {"role": "user", "content": "Tell me a long story"}, "on_disconnect": "CANCEL"},
            headers={**auth, "Accept": "text/event-stream"},
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"token"' in line:
                    tokens += 1
                    if tokens == 2:
                        break
        assert tokens == 2

        # Closing the HTTP stream must cancel the agent's StreamChat call (seen by its own metrics),
        # well before the 60s stall would have ended the turn (generous: CI machines are busy).
        async def cancelled() -> float:
            count = stream_chat_cancellations(agent_metrics_url)
            assert count > cancelled_before, "the agent's StreamChat call was not cancelled"
            return count

        assert await eventually(cancelled, timeout_s=30, interval_s=0.1) == cancelled_before + 1

    # The cancelled turn gives back the session's run lock as it unwinds, so a new turn runs within
    # moments instead of waiting out the stall.
    async def chat_again() -> httpx.Response:
        again = await http.post(
            f"/v1/sessions/{session_id}:chat", json={"message": {"role": "user", "content": "Hi"}}, headers=auth
        )
        assert again.status_code != 409, "the session is still busy with the cancelled turn"
        return again

    again = await eventually(chat_again, timeout_s=5, interval_s=0.1)
    assert again.status_code == 200, again.text
