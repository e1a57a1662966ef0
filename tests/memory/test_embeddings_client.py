"""The embedding client's own decoding (the SDK's POST, no response models): the same vectors
as the SDK's `embeddings.create` from a real OpenAI-compatible server, in `index` order, from
base64 or from a plain list, and a clear EMBEDDINGS_MISMATCH for an answer it cannot read."""

from __future__ import annotations

import array
import base64
import json

import httpx
import openai
import pytest

from meshctl.mesh import Mesh
from runtime.errors import Unavailable
from services.memory.embeddings import OpenAICompatibleEmbedder, decode_vector


def embedder(client: openai.AsyncOpenAI, dim: int) -> OpenAICompatibleEmbedder:
    return OpenAICompatibleEmbedder(client, model="offline-embedding", dim=dim, batch_size=16, label="offline")


def scripted(answer: dict[str, object]) -> openai.AsyncOpenAI:
    def respond(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["encoding_format"] == "base64"
        return httpx.Response(200, json=answer)

    http = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    return openai.AsyncOpenAI(base_url="http://llm.test/v1", api_key="x", http_client=http, max_retries=0)


def b64(values: list[float]) -> str:
    return base64.b64encode(array.array("f", values).tobytes()).decode()


async def test_vectors_match_the_sdks_own_decoding_against_the_offline_server(mesh: Mesh) -> None:
    client = openai.AsyncOpenAI(base_url=mesh.llm_url, api_key="offline")
    texts = ["Name is Ana", "Lives in Lisbon", "Likes tea"]
    try:
        ours = await embedder(client, 64).embed(texts)
        theirs = await client.embeddings.create(model="offline-embedding", input=texts, dimensions=64)
    finally:
        await client.close()
    assert ours == [item.embedding for item in sorted(theirs.data, key=lambda item: item.index)]
    assert len(ours) == 3 and all(len(vector) == 64 for vector in ours)


async def test_answers_are_put_back_in_index_order_whatever_their_encoding() -> None:
    answer = {
        "data": [
            {"index": 1, "embedding": [0.5, -0.25]},  # a server that ignores encoding_format
            {"index": 0, "embedding": b64([1.0, 2.0])},
        ]
    }
    assert await embedder(scripted(answer), 2).embed(["a", "b"]) == [[1.0, 2.0], [0.5, -0.25]]


@pytest.mark.parametrize(
    "answer",
    [
        {"data": [{"index": 0, "embedding": b64([1.0, 2.0, 3.0])}]},  # three numbers, two asked for
        {"data": [{"index": 0, "embedding": "not base64!"}]},
        {"data": [{"index": 0, "embedding": {"x": 1}}]},
        {"data": [{"embedding": b64([1.0, 2.0])}]},  # no index
        {"object": "list"},  # no data
    ],
)
async def test_an_answer_of_the_wrong_shape_is_a_clear_unavailable(answer: dict[str, object]) -> None:
    with pytest.raises(Unavailable) as failed:
        await embedder(scripted(answer), 2).embed(["a"])
    assert failed.value.reason == "EMBEDDINGS_MISMATCH"


def test_base64_decodes_to_the_float32_values() -> None:
    assert decode_vector(b64([0.5, -1.5, 3.25])) == [0.5, -1.5, 3.25]
