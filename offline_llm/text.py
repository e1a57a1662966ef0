"""Word-level text helpers shared by answers, structured tasks, the judge and embeddings.

Everything here is deterministic and cheap: usage counts are whitespace tokens, and "content words"
are lower-cased, crudely stemmed words minus a small stop-word list. The stemmer only needs to make
"hiking", "hikes" and "hike" meet, not to be linguistically right.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STREAM_PIECE_RE = re.compile(r"\s*\S+")

_STOPWORD_TEXT = """
    a an the and or but if then so of to in on at by for with from into about as is are was were be been
    being am do does did doing have has had having i me my mine myself you your yours yourself we our us
    they them their he him his she her it its this that these those there here what which who whom whose
    when where why how can could would should will shall may might must not no yes just very too also
    please tell say said know let any some all up down out over again than s t don't i'm it's what's
    i've i'd you're can't won't isn't
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Fold common English suffixes so inflections of one word compare equal."""
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    # "hiking" -> "hik" must meet "hike" -> "hik" and "running" -> "run" must meet "run".
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]
    return w


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def content_words(text: str) -> list[str]:
    """Stemmed words that carry meaning; falls back to all words for stop-word-only text."""
    found = words(text)
    kept = [stem(w) for w in found if w not in STOPWORDS]
    return kept if kept or not found else [stem(w) for w in found]


def count_tokens(text: str) -> int:
    return len(text.split())


def stream_pieces(text: str) -> list[str]:
    """One word with its leading whitespace per piece, so the pieces concatenate back to `text`."""
    pieces = _STREAM_PIECE_RE.findall(text)
    tail = text[sum(len(p) for p in pieces) :]
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces = [tail]
    return pieces


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part)
    return ""
