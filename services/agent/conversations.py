"""Reading and clearing a session's conversation, for its owner only.

The history is read from the session's checkpoint: user messages, and each turn's
answer with what the turn did (its tool calls and their results, the memory the model
was given, model, tokens, latency) from the metadata the commit node stamped on it.
Pages go back in time: the first page holds the newest messages.
"""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage

from agentmesh.agent.v1 import agent_pb2
from runtime.errors import InvalidArgument
from runtime.paging import decode_page_token, encode_page_token, page_size
from services.agent.checkpoints import Checkpoints
from services.agent.graph import META_KEY, tool_call_message
from services.agent.runs import Runs
from services.agent.session_access import SessionAccess

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


def _meta(message: AnyMessage) -> dict:
    return dict((message.response_metadata or {}).get(META_KEY) or {})


def _timestamp(value: object) -> Timestamp | None:
    if not isinstance(value, str) or not value:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(value))
    return stamp


def history_messages(conversation: list[AnyMessage]) -> list[agent_pb2.Message]:
    """The conversation as the user sees it: their messages and each turn's answer with
    the turn's tool uses and metadata (tool messages fold into the answer they led to)."""
    shown: list[agent_pb2.Message] = []
    uses: dict[str, agent_pb2.ToolUse] = {}
    for message in conversation:
        meta = _meta(message)
        common = {
            "message_id": message.id or "",
            "create_time": _timestamp(meta.get("time")),
            "run_id": str(meta.get("run_id", "")),
        }
        if isinstance(message, HumanMessage):
            uses = {}
            if message.text:
                shown.append(agent_pb2.Message(role="user", content=str(message.text), **common))
        elif isinstance(message, ToolMessage):
            use = uses.setdefault(message.tool_call_id, agent_pb2.ToolUse())
            use.result, use.decision = str(message.text), str(meta.get("decision", ""))
        elif isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                uses[call.get("id") or ""] = agent_pb2.ToolUse(call=tool_call_message(call))
        elif isinstance(message, AIMessage) and (message.text or meta.get("interrupted")):
            prompt, completion = int(meta.get("prompt_tokens", 0)), int(meta.get("completion_tokens", 0))
            shown.append(
                agent_pb2.Message(
                    role="assistant",
                    content=str(message.text),
                    interrupted=bool(meta.get("interrupted")),
                    tool_uses=list(uses.values()),
                    memory_facts=list(meta.get("memory_facts", [])),
                    model=str(meta.get("model", "")),
                    usage=agent_pb2.Usage(
                        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
                    ),
                    latency_ms=int(meta.get("latency_ms", 0)),
                    **common,
                )
            )
            uses = {}
    return shown


def history_page(
    messages: list[agent_pb2.Message], requested_size: int, page_token: str
) -> tuple[list[agent_pb2.Message], str]:
    """The page ending just before the token's message (or at the newest), oldest first."""
    size = page_size(requested_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
    end = len(messages)
    if page_token:
        index, message_id = decode_page_token(page_token, int, str)
        if not (0 <= index < len(messages)) or messages[index].message_id != message_id:
            raise InvalidArgument("page_token is not valid for this conversation", reason="PAGE_TOKEN_INVALID")
        end = index
    start = max(0, end - size)
    token = encode_page_token(start, messages[start].message_id) if start > 0 else ""
    return messages[start:end], token


class Conversations:
    def __init__(self, sessions: SessionAccess, checkpoints: Checkpoints, runs: Runs) -> None:
        self._sessions = sessions
        self._checkpoints = checkpoints
        self._runs = runs

    async def history(
        self, session_id: str, requested_size: int = 0, page_token: str = ""
    ) -> tuple[list[agent_pb2.Message], str]:
        await self._sessions.require_own(session_id)
        messages = history_messages(await self._checkpoints.conversation(session_id))
        return history_page(messages, requested_size, page_token)

    async def clear(self, session_id: str) -> None:
        await self._sessions.require_own(session_id)
        # Runs first: a turn finishing after the delete would write the thread back.
        await self._runs.stop_session(session_id)
        await self._checkpoints.delete(session_id)
        await self._runs.delete_session_runs(session_id)
