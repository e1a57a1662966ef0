"""What a fact is to the store: its normalised form (the key of exact deduplication)
and the candidate shape that extraction and given facts share."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_FACT_LENGTH = 500

# Extraction marks a fact the user takes back ("forget that I like X") with this prefix.
RETRACTION_PREFIX = "NOT:"

_NOT_WORD = re.compile(r"[^\w\s']+")
_SPACE = re.compile(r"\s+")


def normalise_fact(text: str) -> str:
    """Case, width, punctuation and spacing folded away: "Loves  hiking." == "loves hiking".

    Stored in a uniquely indexed column, so two writers cannot insert the same fact twice
    for one user even if they bypass the per-user lock.
    """
    folded = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    return _SPACE.sub(" ", _NOT_WORD.sub(" ", folded)).strip(" '")


@dataclass(frozen=True)
class Candidate:
    """A fact about to be resolved against the user's stored memories."""

    text: str
    retraction: bool = False
    # Given facts are stored as given: deduplicated, but never sent to the LLM.
    given: bool = False

    @classmethod
    def extracted(cls, raw: str) -> Candidate | None:
        text = raw.strip()
        retraction = text.upper().startswith(RETRACTION_PREFIX)
        if retraction:
            text = text[len(RETRACTION_PREFIX) :].strip()
        return cls(text, retraction=retraction) if text else None

    @property
    def normalised(self) -> str:
        return normalise_fact(self.text)

    @property
    def prompt_text(self) -> str:
        """The candidate as the resolution prompt spells it."""
        return f"{RETRACTION_PREFIX} {self.text}" if self.retraction else self.text
