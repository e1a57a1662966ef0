"""What a client may send as its new message: one user message, 1..N characters.

Markup is not ours to interpret: `<script>` is stored and shown verbatim; escaping is
the job of whatever renders it.
"""

from __future__ import annotations

from agentmesh.agent.v1 import agent_pb2
from runtime.errors import InvalidArgument

USER_ROLES = frozenset({"", "user"})


def user_message_text(message: agent_pb2.Message, max_chars: int) -> str:
    if message.role not in USER_ROLES:
        raise InvalidArgument(
            f"message.role must be 'user' (clients send only their own message), not {message.role!r}",
            reason="ROLE_NOT_ALLOWED",
        )
    if not message.content.strip():
        raise InvalidArgument("message.content must not be empty", reason="MESSAGE_EMPTY")
    if len(message.content) > max_chars:
        raise InvalidArgument(
            f"message.content must be at most {max_chars} characters (got {len(message.content)})",
            reason="MESSAGE_TOO_LONG",
        )
    return message.content
