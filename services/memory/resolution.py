"""Resolution of one candidate fact against the user's stored memories (mem0's
ADD/UPDATE/DELETE/NOOP), without mem0's known failures:

- exact duplicates (same normalised text) and near duplicates (cosine similarity at or
  above the dedup threshold) are NOOP without asking the LLM;
- the LLM sees only the few nearest memories, under short ids it cannot confuse with real
  ones, and an answer naming an id it was not shown is never applied to a stored row;
- everything runs inside the caller's per-user locked transaction, so racing adds see
  each other's results and a failure part-way leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from llm_tasks import MEMORY_RESOLUTION
from runtime.errors import Unavailable
from runtime.llm import ModelChain
from runtime.logging import get_logger
from services.memory.embeddings import Embedder, Vector
from services.memory.facts import MAX_FACT_LENGTH, Candidate, normalise_fact
from services.memory.memory_rows import MemoryRow, ScoredMemory
from services.memory.metrics import memory_llm_failures_total
from services.memory.user_memories import UserMemories

log = get_logger(__name__)

Action = Literal["ADD", "UPDATE", "DELETE", "NOOP"]
ACTIONS: tuple[Action, ...] = ("ADD", "UPDATE", "DELETE", "NOOP")

RESOLUTION_SCHEMA = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": list(ACTIONS)},
        "target_id": {"type": "string"},
        "text": {"type": "string"},
    },
    "required": ["action", "target_id", "text"],
    "additionalProperties": False,
}


def _with_action(answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("action") not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    return answer


INSTRUCTIONS = """\
You keep a user's long-term memory consistent. The input is a JSON document
{"candidate": "<new fact>", "existing": [{"id": "...", "text": "..."}]} where `existing`
are the stored facts most similar to the candidate. Answer
{"action": "ADD"|"UPDATE"|"DELETE"|"NOOP", "target_id": "<id from existing or empty>", "text": "<fact>"}:
- NOOP: the candidate says nothing new (same fact, perhaps worded differently); target_id
  is the fact that already says it.
- UPDATE: the candidate gives a new value for the same subject as an existing fact
  ("Lives in Paris" -> "Lives in Berlin", "Loves X" -> "Hates X"); target_id is the old
  fact, text is the fact as it should now read.
- DELETE: the candidate starts with "NOT: " and retracts an existing fact; target_id is
  that fact. A retraction that matches nothing is NOOP with an empty target_id.
- ADD: anything else; target_id is empty and text is the candidate.
Use only ids from `existing`.
"""


@dataclass(frozen=True)
class Outcome:
    """What happened to one candidate; `memory` is the row as it is now (or was, for DELETE)."""

    action: Action
    candidate: str
    memory: MemoryRow | None = None
    previous_text: str = ""


@dataclass(frozen=True)
class Decision:
    action: Action
    target: MemoryRow | None
    text: str


def cosine(a: Vector, b: Vector) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    return dot / norms if norms else 0.0


class Resolver:
    def __init__(self, chain: ModelChain, embedder: Embedder, *, dedup_threshold: float, neighbours: int) -> None:
        self._chain = chain
        self._embedder = embedder
        self._dedup_threshold = dedup_threshold
        self._neighbours = neighbours

    async def resolve(self, memories: UserMemories, candidate: Candidate, vector: Vector, session_id: str) -> Outcome:
        if candidate.retraction:
            return await self._retract(memories, candidate, vector)
        exact = await memories.find_normalised(candidate.normalised)
        if exact is not None:
            return Outcome("NOOP", candidate.text, exact)
        nearest = await memories.nearest(vector, self._neighbours)
        if nearest and nearest[0].score >= self._dedup_threshold:
            return Outcome("NOOP", candidate.text, nearest[0].memory)
        if candidate.given or not nearest:
            return await self._add(memories, candidate.text, vector, session_id)
        decision = await self._decide(candidate, nearest)
        if decision.action == "UPDATE" and decision.target is not None:
            return await self._update(memories, candidate, vector, decision, session_id)
        if decision.action == "DELETE" and decision.target is not None:
            return await self._delete(memories, candidate, decision.target)
        if decision.action == "NOOP":
            return Outcome("NOOP", candidate.text, decision.target)
        return await self._add(memories, candidate.text, vector, session_id)

    async def _retract(self, memories: UserMemories, candidate: Candidate, vector: Vector) -> Outcome:
        exact = await memories.find_normalised(candidate.normalised)
        if exact is not None:
            return await self._delete(memories, candidate, exact)
        nearest = await memories.nearest(vector, self._neighbours)
        if not nearest:
            return Outcome("NOOP", candidate.prompt_text)
        decision = await self._decide(candidate, nearest)
        if decision.action == "DELETE" and decision.target is not None:
            return await self._delete(memories, candidate, decision.target)
        # A retraction never adds or rewrites anything, whatever the model answered.
        return Outcome("NOOP", candidate.prompt_text)

    async def _decide(self, candidate: Candidate, nearest: list[ScoredMemory]) -> Decision:
        # Short ids: a model copies "2" reliably, and cannot invent a real row's UUID.
        shown = {str(i + 1): hit.memory for i, hit in enumerate(nearest)}
        try:
            answer, _ = await self._chain.complete_json(
                name=MEMORY_RESOLUTION,
                schema=RESOLUTION_SCHEMA,
                instructions=INSTRUCTIONS,
                document={
                    "candidate": candidate.prompt_text,
                    "existing": [{"id": key, "text": row.text} for key, row in shown.items()],
                },
                parse=_with_action,
            )
        except Unavailable as exc:
            memory_llm_failures_total.labels(stage=MEMORY_RESOLUTION).inc()
            log.warning("memory_llm_call_failed", task=MEMORY_RESOLUTION, error=str(exc))
            raise
        action = answer["action"]
        target = shown.get(str(answer.get("target_id", "")))
        text = str(answer.get("text") or "").strip()
        if action in ("UPDATE", "DELETE") and target is None:
            log.warning("memory_resolution_unknown_target", action=action)
        return Decision(action, target, text)

    async def _add(self, memories: UserMemories, text: str, vector: Vector, session_id: str) -> Outcome:
        row = await memories.insert(text, vector, session_id)
        if row is None:
            return Outcome("NOOP", text, await memories.find_normalised(normalise_fact(text)))
        return Outcome("ADD", text, row)

    async def _update(
        self, memories: UserMemories, candidate: Candidate, vector: Vector, decision: Decision, session_id: str
    ) -> Outcome:
        target = decision.target
        assert target is not None
        text = decision.text if 0 < len(decision.text) <= MAX_FACT_LENGTH else candidate.text
        normalised = normalise_fact(text)
        if normalised == normalise_fact(target.text):
            return Outcome("NOOP", candidate.text, target)
        same = await memories.find_normalised(normalised)
        if same is not None:
            # The new value is already stored: the old one is simply superseded.
            await memories.delete(target.id)
            return Outcome("UPDATE", candidate.text, same, previous_text=target.text)
        if normalised != candidate.normalised:
            (vector,) = await self._embedder.embed([text])
        row = await memories.update(target.id, text, vector, session_id)
        if row is None:
            return await self._add(memories, text, vector, session_id)
        return Outcome("UPDATE", candidate.text, row, previous_text=target.text)

    async def _delete(self, memories: UserMemories, candidate: Candidate, target: MemoryRow) -> Outcome:
        row = await memories.delete(target.id)
        if row is None:
            return Outcome("NOOP", candidate.prompt_text)
        return Outcome("DELETE", candidate.prompt_text, row)
