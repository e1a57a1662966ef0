"""OpenAI chat-completion wire shapes: `chat.completion`, `chat.completion.chunk` and SSE frames.

The shapes follow `openai.types.chat.ChatCompletion` / `ChatCompletionChunk` field for field,
including the `usage: null` on every chunk when `stream_options.include_usage` is set and the final
usage-only chunk with empty `choices`, because clients (langchain's `stream_usage`) rely on both.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from offline_llm.answers import ToolCall
from offline_llm.text import stream_pieces

SYSTEM_FINGERPRINT = "fp_agentmesh_offline"
DONE_FRAME = b"data: [DONE]\n\n"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def sse_frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + _dumps(payload).encode() + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def new_tool_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


@dataclass
class Completion:
    """One assistant turn, already cut into the pieces it is streamed as."""

    model: str
    prompt_tokens: int
    pieces: list[str]
    tool_call: ToolCall | None
    finish_reason: str
    id: str = ""
    created: int = 0
    tool_call_id: str = ""
    # Parallel calls after `tool_call` (sent whole, each in one chunk when streaming).
    more_calls: list[tuple[str, ToolCall]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.id = self.id or "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = self.created or int(time.time())
        if self.tool_call is not None and not self.tool_call_id:
            self.tool_call_id = new_tool_call_id()

    @classmethod
    def of_text(cls, model: str, prompt_tokens: int, text: str, max_tokens: int | None) -> Completion:
        pieces = stream_pieces(text)
        finish = "stop"
        if max_tokens is not None and 0 < max_tokens < len(pieces):
            pieces, finish = pieces[:max_tokens], "length"
        return cls(model, prompt_tokens, pieces, None, finish)

    @classmethod
    def of_tool_call(cls, model: str, prompt_tokens: int, call: ToolCall, *more: ToolCall) -> Completion:
        completion = cls(model, prompt_tokens, stream_pieces(call.arguments) or [""], call, "tool_calls")
        completion.more_calls = [(new_tool_call_id(), extra) for extra in more]
        return completion

    @property
    def completion_tokens(self) -> int:
        extra = sum(len(stream_pieces(call.arguments)) + 1 for _, call in self.more_calls)
        return len(self.pieces) + (1 if self.tool_call else 0) + extra

    def usage(self) -> dict[str, Any]:
        return usage(self.prompt_tokens, self.completion_tokens)

    def as_json(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
        if self.tool_call is None:
            message["content"] = "".join(self.pieces)
        else:
            calls = [(self.tool_call_id, self.tool_call), *self.more_calls]
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call_id, call in calls
            ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}],
            "usage": self.usage(),
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None, with_usage: bool) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if with_usage:
            chunk["usage"] = None
        return sse_frame(chunk)

    def stream_frames(self, include_usage: bool) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """The SSE frames as (opening, one per token, closing) so the streamer can pace tokens."""
        if self.tool_call is None:
            opening = [self._chunk({"role": "assistant", "content": "", "refusal": None}, None, include_usage)]
            tokens = [self._chunk({"content": piece}, None, include_usage) for piece in self.pieces]
        else:
            first_call = {
                "index": 0,
                "id": self.tool_call_id,
                "type": "function",
                "function": {"name": self.tool_call.name, "arguments": ""},
            }
            opening = [
                self._chunk(
                    {"role": "assistant", "content": None, "tool_calls": [first_call], "refusal": None},
                    None,
                    include_usage,
                )
            ]
            tokens = [
                self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None, include_usage)
                for piece in self.pieces
            ]
            for index, (call_id, call) in enumerate(self.more_calls, start=1):
                whole = {"index": index, "id": call_id, "type": "function"}
                whole["function"] = {"name": call.name, "arguments": call.arguments}
                tokens.append(self._chunk({"tool_calls": [whole]}, None, include_usage))
        closing = [self._chunk({}, self.finish_reason, include_usage)]
        if include_usage:
            closing.append(
                sse_frame(
                    {
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "service_tier": "default",
                        "system_fingerprint": SYSTEM_FINGERPRINT,
                        "choices": [],
                        "usage": self.usage(),
                    }
                )
            )
        closing.append(DONE_FRAME)
        return opening, tokens, closing


def error_body(message: str, error_type: str, code: str | None, param: str | None = None) -> bytes:
    return _dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}}).encode()
