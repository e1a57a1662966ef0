"""Fact extraction: what the user said about themselves, as short facts.

Only `user` messages are sent: the system prompt, the assistant's words and tool output
never become memories, whatever they contain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llm_tasks import MEMORY_FACTS
from runtime.errors import Unavailable
from runtime.llm import ModelChain
from runtime.logging import get_logger
from services.memory.facts import MAX_FACT_LENGTH, Candidate
from services.memory.metrics import memory_llm_failures_total

log = get_logger(__name__)

FACTS_SCHEMA = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
    "required": ["facts"],
    "additionalProperties": False,
}

INSTRUCTIONS = """\
You extract durable facts about the user from their own messages, for a long-term memory.
The input is a JSON document {"messages": [{"role": "user", "content": "..."}]}.
Answer {"facts": [...]}: each fact a short sentence about the user without a subject,
starting with a capitalised verb or noun, e.g. "Name is Ana", "Lives in Berlin",
"Works at Acme", "Loves hiking", "Is allergic to peanuts", "Favourite colour is green".
- Only facts the user states about themselves: personal details, preferences, plans,
  relationships, health, work. Not questions, requests, greetings or opinions about the chat.
- When the user takes a fact back ("I no longer like X", "forget that I live in Y"),
  give the fact they retract prefixed with "NOT: ", e.g. "NOT: Likes X".
- Never invent facts; answer {"facts": []} when there are none.
"""


def _raw_facts(answer: dict[str, Any]) -> list[Any]:
    raw_facts = answer.get("facts")
    if not isinstance(raw_facts, list):
        raise ValueError("facts is not a list")
    return raw_facts


class FactExtractor:
    def __init__(self, chain: ModelChain) -> None:
        self._chain = chain

    async def extract(self, user_messages: Iterable[str]) -> list[Candidate]:
        document = {"messages": [{"role": "user", "content": content} for content in user_messages]}
        if not document["messages"]:
            return []
        try:
            raw_facts, _ = await self._chain.complete_json(
                name=MEMORY_FACTS, schema=FACTS_SCHEMA, instructions=INSTRUCTIONS, document=document, parse=_raw_facts
            )
        except Unavailable as exc:
            # Nothing is stored: AddMemories answers UNAVAILABLE rather than half a turn.
            memory_llm_failures_total.labels(stage=MEMORY_FACTS).inc()
            log.warning("memory_llm_call_failed", task=MEMORY_FACTS, error=str(exc))
            raise
        candidates = []
        for raw in raw_facts:
            # A model's overlong or non-string "fact" is noise, not a memory.
            if not isinstance(raw, str) or len(raw) > MAX_FACT_LENGTH:
                continue
            candidate = Candidate.extracted(raw)
            if candidate is not None:
                candidates.append(candidate)
        return candidates
