"""What the model sees: the system prompt and as much recent conversation as the token
budget allows, starting on a user message, with every tool call next to its result."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage, trim_messages
from langchain_core.messages.utils import count_tokens_approximately


def tool_pairs_intact(messages: Sequence[BaseMessage]) -> bool:
    """Every tool result answers a call made before it, and every call is answered."""
    open_calls: set[str] = set()
    for message in messages:
        if isinstance(message, AIMessage):
            if open_calls:
                return False
            open_calls = {call["id"] for call in message.tool_calls if call.get("id")}
        elif isinstance(message, ToolMessage):
            if message.tool_call_id not in open_calls:
                return False
            open_calls.discard(message.tool_call_id)
        elif open_calls:
            return False
    return True


def context_window(
    system_prompt: str, history: Sequence[BaseMessage], turn: Sequence[BaseMessage], max_tokens: int
) -> list[BaseMessage]:
    """System prompt + trimmed history + this turn (which is never cut, even over budget).

    The turn may end with an unanswered call only while its tools run, never here."""
    system = SystemMessage(content=system_prompt)
    # The approximate counter is pure CPU: a tokenizer download or a model-specific
    # count would stall turns and break offline.
    trimmed = trim_messages(
        [system, *history, *turn],
        max_tokens=max_tokens,
        token_counter=count_tokens_approximately,
        strategy="last",
        start_on="human",
        include_system=True,
        allow_partial=False,
    )
    kept_turn = trimmed[len(trimmed) - len(turn) :] if turn else []
    if len(trimmed) < len(turn) + 1 or kept_turn != list(turn):
        return [system, *turn]
    if not tool_pairs_intact(trimmed[1:]):
        return [system, *turn]
    return trimmed
