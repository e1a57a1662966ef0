"""Which tool calls wait for a person, and what a person's decision does to a call.

A call needs a person when its tool is in TOOLS_REQUIRE_APPROVAL (`*`: every tool) or it
is `ask_user`. An approval is bound to the exact arguments shown: the SHA-256 of their
canonical JSON travels with the decision and must still match when the call runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.agent.tools.ask_user import ASK_USER

APPROVE, REJECT, EDIT, ANSWER = "approve", "reject", "edit", "answer"
KIND_APPROVAL, KIND_QUESTION = "tool_approval", "question"
REJECTED_RESULT = "The user rejected this call; it was not run. Answer without it."
UNANSWERED_RESULT = "The user did not answer the question."


def arguments_sha256(arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ApprovalPolicy:
    tools: frozenset[str]

    @classmethod
    def from_names(cls, names: Iterable[str]) -> ApprovalPolicy:
        return cls(frozenset(name.strip() for name in names if name.strip()))

    def needs_person(self, tool_name: str) -> bool:
        return tool_name == ASK_USER or "*" in self.tools or tool_name in self.tools

    @staticmethod
    def kind(tool_name: str) -> str:
        return KIND_QUESTION if tool_name == ASK_USER else KIND_APPROVAL


def pending_request(call: dict[str, Any]) -> dict[str, Any]:
    """What the graph's interrupt carries for one call (stored in the checkpoint)."""
    args = call.get("args") or {}
    return {
        "tool_call_id": call.get("id") or "",
        "name": call["name"],
        "arguments": args,
        "arguments_sha256": arguments_sha256(args),
        "kind": ApprovalPolicy.kind(call["name"]),
        "question": str(args.get("question", "")) if call["name"] == ASK_USER else "",
    }
