"""A browser's view of durable runs: SSE events carry `id:`, and a reconnect to another
gateway process with `Last-Event-ID` gets every missed event once, then the live tail."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.gateway import GatewayProcess, gateway_process, offline_llm_stall, sse_events

PASSWORD = "Corr3ct-Horse!"
SSE = {"Accept": "text/event-stream"}


@pytest.fixture
async def http(mesh_gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mesh_gateway.url, timeout=60) as client:
        yield client


async def signed_up(http: httpx.AsyncClient) -> dict[str, str]:
    email = f"resume-{uuid.uuid4().hex[:12]}@example.com"
    response = await http.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['tokens']['access_token']}"}


def sse_with_ids(text: str) -> list[tuple[int, dict]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in fields:
            events.append((int(fields["id"]), json.loads(fields["data"])))
    return events


async def test_reload_resumes_on_another_gateway_with_last_event_id(
    http: httpx.AsyncClient, mesh_gateway: GatewayProcess
) -> None:
    auth = await signed_up(http)
    session_id = (await http.post("/v1/sessions", json={}, headers=auth)).json()["session"]["session_id"]
    llm_root = mesh_gateway.env["LLM_BASE_URL"].removesuffix("/v1")
    seen: list[tuple[int, dict]] = []
    with offline_llm_stall(llm_root, stall_s=2, after_tokens=2):
        async with http.stream(
            "POST",
            f"/v1/sessions/{session_id}:stream",
            json={"message": {"role": "user", "content": "Tell me about the sea"}},
            headers={**auth, **SSE},
        ) as response:
            assert response.status_code == 200
            block: list[str] = []
            async for line in response.aiter_lines():
                if line:
                    block.append(line)
                    continue
                seen += sse_with_ids("\n".join(block))
                block = []
                if len(seen) == 3:
                    break  # the page reloads after the third event

        run_id = seen[0][1]["run_id"]
        env = {key: value for key, value in mesh_gateway.env.items() if key != "GATEWAY_METRICS_PORT"}
        with gateway_process(env) as other:
            async with httpx.AsyncClient(base_url=other.url, timeout=60) as second:
                resumed = await second.get(
                    f"/v1/sessions/{session_id}/runs/{run_id}:stream",
                    headers={**auth, **SSE, "Last-Event-ID": str(seen[-1][0])},
                )
    assert resumed.status_code == 200, resumed.text
    rest = sse_with_ids(resumed.text)
    events = seen + rest
    assert [event_id for event_id, _ in events] == list(range(1, len(events) + 1))
    assert [event["seq"] for _, event in events] == [int(event_id) for event_id, _ in events]
    assert "started" in events[0][1] and "completed" in events[-1][1]
    text = "".join(event["token"]["text"] for _, event in events if "token" in event)
    assert text == events[-1][1]["completed"]["message"]["content"]


async def test_background_run_short_enum_names_and_bad_last_event_id(http: httpx.AsyncClient) -> None:
    auth = await signed_up(http)
    session_id = (await http.post("/v1/sessions", json={}, headers=auth)).json()["session"]["session_id"]

    created = await http.post(
        f"/v1/sessions/{session_id}/runs",
        json={"message": {"role": "user", "content": "hello"}, "multitask_strategy": "ENQUEUE"},
        headers=auth,
    )

    assert created.status_code == 200, created.text
    run = created.json()
    assert run["multitask_strategy"] == "MULTITASK_STRATEGY_ENQUEUE"
    streamed = await http.get(f"/v1/sessions/{session_id}/runs/{run['run_id']}:stream", headers={**auth, **SSE})
    names = [name for name, _ in sse_events(streamed.text)]
    assert names and names[-1] == "message"
    final = await http.get(f"/v1/sessions/{session_id}/runs/{run['run_id']}", headers=auth)
    assert final.json()["status"] == "RUN_STATUS_SUCCEEDED"
    listed = await http.get(f"/v1/sessions/{session_id}/runs", headers=auth)
    assert [r["run_id"] for r in listed.json()["runs"]] == [run["run_id"]]
    bad = await http.get(
        f"/v1/sessions/{session_id}/runs/{run['run_id']}:stream", headers={**auth, **SSE, "Last-Event-ID": "abc"}
    )
    assert bad.status_code == 400 and bad.json()["details"][0]["reason"] == "LAST_EVENT_ID_INVALID"
    cancelled = await http.post(
        f"/v1/sessions/{session_id}/runs/{run['run_id']}:cancel", json={"action": "ROLLBACK"}, headers=auth
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "RUN_STATUS_SUCCEEDED"
