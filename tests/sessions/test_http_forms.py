"""The new session and memory routes through the real gateway (JSON transcoding by the
protos' http rules): UpdateSession's AIP and flat bodies, ttl on create, UpdateMemory,
GetMemoryHistory and the ListMemories session filter.

Before: PATCH /v1/sessions/{id} with `{"session": ..., "update_mask": ...}` was refused
("has no field named session"), and the memory routes did not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from meshctl.mesh import Mesh

PASSWORD = "Corr3ct-Horse!"


@pytest.fixture
async def http(mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    if not mesh.gateway_url or not {"sessions", "memory"} <= set(mesh.processes):
        pytest.skip("MESH_ONLY leaves out the gateway, sessions or memory")
    async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=30) as client:
        email = f"forms-{uuid.uuid4().hex[:12]}@example.com"
        registered = await client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 200, registered.text
        client.headers["Authorization"] = f"Bearer {registered.json()['tokens']['access_token']}"
        yield client


async def test_update_session_both_forms_over_http(http: httpx.AsyncClient) -> None:
    created = await http.post("/v1/sessions", json={"name": "first", "ttl": "3600s"})
    assert created.status_code == 200, created.text
    session = created.json()["session"]
    assert "expire_time" in session  # responses keep the proto field names
    sid = session["session_id"]

    aip = await http.patch(f"/v1/sessions/{sid}", json={"session": {"name": "second"}, "updateMask": "name"})
    assert aip.status_code == 200, aip.text
    assert aip.json()["session"]["name"] == "second"

    never = await http.patch(f"/v1/sessions/{sid}", json={"session": {}, "updateMask": "expireTime"})
    flat = await http.patch(f"/v1/sessions/{sid}", json={"name": "third"})
    bad = await http.patch(f"/v1/sessions/{sid}", json={"session": {"name": "x"}, "updateMask": "userId"})

    assert never.status_code == 200, never.text
    assert "expire_time" not in never.json()["session"]
    assert flat.status_code == 200, flat.text
    assert flat.json()["session"]["name"] == "third"
    assert bad.status_code == 400
    assert "UPDATE_MASK_INVALID" in bad.text


async def test_memory_routes_over_http(http: httpx.AsyncClient) -> None:
    session_id = str(uuid.uuid4())
    added = await http.post("/v1/memories", json={"facts": ["Grows basil"], "sessionId": session_id})
    assert added.status_code == 200, added.text
    memory = added.json()["events"][0]["memory"]
    memory_id = memory["memory_id"]

    updated = await http.patch(
        f"/v1/memories/{memory_id}", json={"memory": {"text": "Grows thyme"}, "updateMask": "text"}
    )
    history = await http.get(f"/v1/memories/{memory_id}/history")
    filtered = await http.get("/v1/memories", params={"sessionId": session_id})
    other = await http.get("/v1/memories", params={"sessionId": str(uuid.uuid4())})

    assert updated.status_code == 200, updated.text
    assert updated.json()["memory"]["text"] == "Grows thyme"
    assert history.status_code == 200, history.text
    entries = history.json()["entries"]
    assert [e["text"] for e in entries] == ["Grows basil", "Grows thyme"]
    assert [m["text"] for m in filtered.json()["memories"]] == ["Grows thyme"]
    assert other.json().get("memories", []) == []
