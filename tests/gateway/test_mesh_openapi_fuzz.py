"""Schemathesis against /openapi.json of the real gateway: no 5xx on valid or invalid input,
responses match their schema.

Bounded (few examples per operation, a time budget) so it fits in `make test`. Only services that
answer SERVING (the metrics port's /upstreamz) are fuzzed: the others would rightly answer 503, which proves nothing.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.waiting import eventually_sync

PASSWORD = "Corr3ct-Horse!"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "unsupported_method",
        "allow_header_conformance",
    ]
)
MAX_TIME_S = 25  # bounded to fit `make test`; every operation still gets positive and negative cases


def serving_tags(gateway: GatewayProcess) -> list[str]:
    """Services whose upstream answered SERVING, from the metrics port's /upstreamz."""

    def checked() -> dict:
        detail = httpx.get(f"{gateway.metrics_url}/upstreamz", timeout=10).json()
        assert detail["checked_at"], "the gateway has not checked its upstreams yet"
        return detail

    detail = eventually_sync(checked, timeout_s=30, interval_s=0.1)
    return sorted(name for name, each in detail["upstreams"].items() if each["status"] == "SERVING")


@pytest.mark.timeout(MAX_TIME_S + 120)
def test_schemathesis_finds_no_server_errors_or_schema_mismatches(mesh_gateway: GatewayProcess, tmp_path: Path) -> None:
    registered = httpx.post(
        f"{mesh_gateway.url}/v1/auth/register",
        json={"email": f"fuzz-{uuid.uuid4().hex[:12]}@example.com", "password": PASSWORD},
        timeout=30,
    )
    assert registered.status_code == 200, registered.text
    token = registered.json()["tokens"]["access_token"]
    tags = serving_tags(mesh_gateway)
    assert "agentmesh.auth.v1.AuthService" in tags
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{mesh_gateway.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--include-tag-regex",
        "^(" + "|".join(t.replace(".", r"\.") for t in tags) + ")$",
        "--checks",
        CHECKS,
        # Positive and negative data: wrong types, out-of-range numbers, missing and extra fields,
        # strings with NUL, malformed path and query values. Any 5xx fails the run.
        "--mode",
        "all",
        "--generation-allow-x00",
        "true",
        "--max-examples",
        "5",
        "--max-time",
        str(MAX_TIME_S),
        "--seed",
        "20260101",
        "--request-timeout",
        "30",
        "--workers",
        "1",
        "--no-color",
        "--warnings",
        "off",
    ]
    if "agentmesh.agent.v1.AgentService" not in tags:
        # DeleteSession also clears the agent's conversation; without the agent it answers 503.
        command += ["--exclude-operation-id", "SessionService_DeleteSession"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=MAX_TIME_S + 90)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "generated" in result.stdout
