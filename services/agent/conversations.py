"""Reading and clearing a session's conversation, for its owner only."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage

from agentmesh.agent.v1 import agent_pb2
from services.agent.checkpoints import Checkpoints
from services.agent.run_lock import RunLocks
from services.agent.session_access import SessionAccess


class Conversations:
    def __init__(self, sessions: SessionAccess, checkpoints: Checkpoints, locks: RunLocks) -> None:
        self._sessions = sessions
        self._checkpoints = checkpoints
        self._locks = locks

    async def history(self, session_id: str) -> list[agent_pb2.Message]:
        await self._sessions.require_own(session_id)
        messages = []
        for message in await self._checkpoints.conversation(session_id):
            role = "user" if isinstance(message, HumanMessage) else "assistant"
            if isinstance(message, HumanMessage | AIMessage) and message.text:
                messages.append(agent_pb2.Message(role=role, content=str(message.text)))
        return messages

    async def clear(self, session_id: str) -> None:
        await self._sessions.require_own(session_id)
        # Under the run lock: a turn finishing after the delete would write the thread back.
        async with self._locks.hold(session_id):
            await self._checkpoints.delete(session_id)
