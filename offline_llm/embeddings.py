"""Deterministic embeddings by signed feature hashing.

Each text becomes the L2-normalised sum of hashed features: its stemmed content words (weight 1.0)
and the character trigrams of each stem with word-boundary marks (weight 0.35 each). Stemming makes
"hiking", "hikes" and "hike" share the word feature, trigrams make near-spellings overlap, and stop
words are left out so "I love hiking" and "I work at a bank" do not meet on "I". Hashes come from
blake2b, because Python's `hash()` is salted per process and vectors must be stable across runs and
machines. The sign of each feature is a hash bit, so unrelated features cancel out on average.

Numpy is not a dependency of the project, so this is plain Python with per-word feature lists
cached; a word seen once costs a dictionary look-up afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from functools import lru_cache

from offline_llm.text import STOPWORDS, WORD_RE, stem

WORD_WEIGHT = 1.0
TRIGRAM_WEIGHT = 0.35


def _feature_slot(feature: str, dim: int) -> tuple[int, float]:
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return (digest >> 1) % dim, 1.0 if digest & 1 else -1.0


@lru_cache(maxsize=200_000)
def _word_features(word: str, dim: int) -> tuple[tuple[int, float], ...]:
    stemmed = stem(word)
    slot, sign = _feature_slot("w:" + stemmed, dim)
    features = [(slot, sign * WORD_WEIGHT)]
    marked = f"<{stemmed}>"
    for i in range(len(marked) - 2):
        slot, sign = _feature_slot("c:" + marked[i : i + 3], dim)
        features.append((slot, sign * TRIGRAM_WEIGHT))
    return tuple(features)


def embed_text(text: str, dim: int) -> list[float]:
    found = WORD_RE.findall(text.lower())
    kept = [w for w in found if w not in STOPWORDS] or found
    vector = [0.0] * dim
    for word in kept:
        for slot, weight in _word_features(word, dim):
            vector[slot] += weight
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        # Empty text still needs a unit vector so cosine similarity stays defined for callers.
        vector[0] = 1.0
        return vector
    return [v / norm for v in vector]


def embed_tokens(tokens: list[int], dim: int) -> list[float]:
    """Token-id input (as the openai SDK can send) is embedded as one pseudo-word per token id."""
    return embed_text(" ".join(f"tok{t}" for t in tokens), dim)


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 format: little-endian float32 values, as the openai SDK decodes them."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
