"""Fact extraction: what the user said about themselves, as short facts.

Only `user` messages are sent: the system prompt, the assistant's words and tool output
never become memories, whatever they contain.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.memory.facts import MAX_FACT_LENGTH, Candidate
from services.memory.llm import StructuredLLM

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


class FactExtractor:
    def __init__(self, llm: StructuredLLM) -> None:
        self._llm = llm

    async def extract(self, user_messages: Iterable[str]) -> list[Candidate]:
        document = {"messages": [{"role": "user", "content": content} for content in user_messages]}
        if not document["messages"]:
            return []
        answer = await self._llm.complete(
            name="memory_facts", schema=FACTS_SCHEMA, instructions=INSTRUCTIONS, document=document
        )
        raw_facts = answer.get("facts")
        if not isinstance(raw_facts, list):
            raise self._llm.malformed("memory_facts")
        candidates = []
        for raw in raw_facts:
            # A model's overlong or non-string "fact" is noise, not a memory.
            if not isinstance(raw, str) or len(raw) > MAX_FACT_LENGTH:
                continue
            candidate = Candidate.extracted(raw)
            if candidate is not None:
                candidates.append(candidate)
        return candidates
