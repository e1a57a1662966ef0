"""Reading and clearing a session's conversation, for its owner only."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage

from agentmesh.agent.v1 import agent_pb2
from services.agent.checkpoints import Checkpoints
from services.agent.executor import INTERRUPTED_KEY
from services.agent.runs import Runs
from services.agent.session_access import SessionAccess


class Conversations:
    def __init__(self, sessions: SessionAccess, checkpoints: Checkpoints, runs: Runs) -> None:
        self._sessions = sessions
        self._checkpoints = checkpoints
        self._runs = runs

    async def history(self, session_id: str) -> list[agent_pb2.Message]:
        await self._sessions.require_own(session_id)
        messages = []
        for message in await self._checkpoints.conversation(session_id):
            if isinstance(message, HumanMessage) and message.text:
                messages.append(agent_pb2.Message(role="user", content=str(message.text)))
            elif isinstance(message, AIMessage):
                interrupted = bool(message.additional_kwargs.get(INTERRUPTED_KEY))
                if message.text or interrupted:
                    messages.append(
                        agent_pb2.Message(role="assistant", content=str(message.text), interrupted=interrupted)
                    )
        return messages

    async def clear(self, session_id: str) -> None:
        await self._sessions.require_own(session_id)
        # Runs first: a turn finishing after the delete would write the thread back.
        await self._runs.stop_session(session_id)
        await self._checkpoints.delete(session_id)
        await self._runs.delete_session_runs(session_id)
