"""A real offline LLM server on a free loopback port, shared by the tests and reset between them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from offline_llm import OfflineLLMSettings, RunningServer, serve_in_process


@pytest_asyncio.fixture(scope="session")
async def offline_server() -> AsyncIterator[RunningServer]:
    settings = OfflineLLMSettings(host="127.0.0.1", port=0, faults="")
    async with serve_in_process(settings) as running:
        yield running


@pytest_asyncio.fixture
async def control(offline_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the `/_offline/*` endpoints; the server's faults, scripts and stats start empty."""
    async with httpx.AsyncClient(base_url=offline_server.root_url, timeout=10) as client:
        response = await client.post("/_offline/reset")
        assert response.status_code == 200
        yield client


@pytest_asyncio.fixture
async def openai_client(offline_server: RunningServer, control: httpx.AsyncClient) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=offline_server.base_url, api_key="offline", max_retries=0, timeout=10)
    yield client
    await client.close()


@pytest.fixture
def base_url(offline_server: RunningServer) -> str:
    return offline_server.base_url
