"""CONTEXT_STRATEGY=summarize: when the conversation no longer fits MAX_CONTEXT_TOKENS, the
older turns are summarised by the model into a running summary kept in the graph state;
the model sees the summary (in its system prompt) instead of those turns, which stay in
the history for GetHistory. With `trim` older turns are only dropped from the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately

import llm_tasks
from runtime.llm import ModelAnswer, ModelChain

SUMMARY_TASK = llm_tasks.CONVERSATION_SUMMARY
SUMMARY_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
    "additionalProperties": False,
}
INSTRUCTIONS = (Path(__file__).parent / "prompts" / "summary.md").read_text(encoding="utf-8")
# What stays verbatim after a compaction: the recent turns that fit in this share of the budget.
KEEP_SHARE = 0.5
MAX_SUMMARY_CHARS = 8000


def needs_compaction(system: str, history: Sequence[BaseMessage], turn: Sequence[BaseMessage], budget: int) -> bool:
    return count_tokens_approximately([HumanMessage(content=system), *history, *turn]) > budget


def compaction_cut(history: Sequence[BaseMessage], budget: int) -> int:
    """How many of the oldest messages to summarise: the rest (recent turns within
    KEEP_SHARE of the budget) start on a user message, so tool calls stay with results."""
    keep_tokens = int(budget * KEEP_SHARE)
    total = 0
    cut = len(history)
    for index in range(len(history) - 1, -1, -1):
        total += count_tokens_approximately([history[index]])
        if total > keep_tokens:
            break
        if isinstance(history[index], HumanMessage):
            cut = index
    return cut


def _as_document(message: BaseMessage) -> dict[str, str]:
    role = "user" if isinstance(message, HumanMessage) else "assistant"
    return {"role": role, "content": str(message.text)}


async def summarise(chain: ModelChain, previous: str, older: Sequence[BaseMessage]) -> tuple[str, ModelAnswer]:
    document = {"summary": previous, "messages": [_as_document(m) for m in older if m.text]}
    parsed, answer = await chain.complete_json(
        name=SUMMARY_TASK, schema=SUMMARY_SCHEMA, instructions=INSTRUCTIONS, document=document
    )
    return str(parsed.get("summary", ""))[:MAX_SUMMARY_CHARS], answer
