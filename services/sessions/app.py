"""Wiring of the sessions service."""

from __future__ import annotations

from pathlib import Path

from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from runtime.database import Database, open_database
from runtime.server import Mount, ServiceApp
from runtime.service_identity import ServiceIdentity
from services.sessions.chat_sessions import ChatSessions
from services.sessions.conversations import AgentConversationCleaner, ConversationCleaner, NoConversationCleaner
from services.sessions.server import SessionServicer
from services.sessions.settings import SessionsSettings
from services.sessions.store import SessionStore
from services.sessions.sweeper import SessionSweeper

MIGRATIONS = Path(__file__).parent / "migrations"


class SessionsApp(ServiceApp):
    name = "sessions"
    settings: SessionsSettings

    def __init__(self, settings: SessionsSettings) -> None:
        super().__init__(settings)
        self.database: Database | None = None
        self.conversations: ConversationCleaner | None = None
        self.sweeper: SessionSweeper | None = None

    async def start(self) -> list[Mount]:
        s = self.settings
        self.database = await open_database(s, schema="sessions", migrations=MIGRATIONS)
        self.conversations = (
            AgentConversationCleaner(s.agent_addr, s.agent_call_timeout_s, ServiceIdentity.from_settings(s, self.name))
            if s.delete_conversation_state
            else NoConversationCleaner()
        )
        store = SessionStore(self.database.engine)
        sessions = ChatSessions(
            store,
            self.conversations,
            max_sessions_per_user=s.max_sessions_per_user,
            default_ttl_s=s.session_ttl_s,
        )
        self.sweeper = SessionSweeper(
            store, self.conversations, interval_s=s.session_sweep_interval_s, batch=s.session_sweep_batch
        )
        self.sweeper.start()
        return [
            Mount(
                descriptor=sessions_pb2.DESCRIPTOR.services_by_name["SessionService"],
                add_to_server=sessions_pb2_grpc.add_SessionServiceServicer_to_server,
                servicer=SessionServicer(sessions, own_service=self.name),
            )
        ]

    async def stop(self) -> None:
        if self.sweeper is not None:
            await self.sweeper.close()
        if self.conversations is not None:
            await self.conversations.close()
        if self.database is not None:
            await self.database.close()
