"""Embeddings: OpenAI's shape in both encodings, unit length, and similarity that follows word overlap."""

from __future__ import annotations

import math

import httpx
from openai import AsyncOpenAI


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_similarity_follows_shared_words(openai_client: AsyncOpenAI) -> None:
    texts = ["hiking", "I love hiking", "Loves hiking", "I work at a bank"]
    response = await openai_client.embeddings.create(model="offline-embedding", input=texts)
    query, love, loves, bank = (item.embedding for item in response.data)

    assert [item.index for item in response.data] == [0, 1, 2, 3]
    assert len(query) == 384
    assert math.isclose(math.sqrt(sum(v * v for v in query)), 1.0, rel_tol=1e-5)
    assert cosine(query, love) > cosine(query, bank) + 0.3
    assert cosine(query, loves) > cosine(query, bank) + 0.3
    assert response.usage.prompt_tokens == 1 + 3 + 2 + 5


async def test_base64_and_float_encodings_agree(openai_client: AsyncOpenAI, control: httpx.AsyncClient) -> None:
    # The openai SDK asks for base64 when no format is given and decodes it to floats.
    decoded = await openai_client.embeddings.create(model="offline-embedding", input="Lives in Berlin", dimensions=64)
    raw = await control.post(
        "/v1/embeddings", json={"model": "offline-embedding", "input": "Lives in Berlin", "dimensions": 64}
    )
    as_floats = raw.json()["data"][0]["embedding"]

    assert raw.json()["data"][0]["object"] == "embedding" and raw.json()["object"] == "list"
    assert len(decoded.data[0].embedding) == 64
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(decoded.data[0].embedding, as_floats, strict=True))


async def test_embeddings_are_deterministic_across_calls(control: httpx.AsyncClient) -> None:
    body = {"model": "offline-embedding", "input": ["Name is Ana", "Name is Ana"], "encoding_format": "base64"}

    first = (await control.post("/v1/embeddings", json=body)).json()["data"]
    second = (await control.post("/v1/embeddings", json=body)).json()["data"]

    assert first[0]["embedding"] == first[1]["embedding"] == second[0]["embedding"]
    assert isinstance(first[0]["embedding"], str)


async def test_bad_embedding_input_is_rejected(control: httpx.AsyncClient) -> None:
    response = await control.post("/v1/embeddings", json={"model": "offline-embedding", "input": [1.5]})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"
