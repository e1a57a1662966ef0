"""The agent records each turn's trace as itself (a service token), naming the user:
the trace arrives in evals although users may no longer call RecordTrace."""

from __future__ import annotations

import grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from runtime.database import with_driver
from tests.support.users import MeshUser
from tests.support.waiting import eventually

TRACE_OF_SESSION = text("SELECT user_id FROM traces WHERE session_id = :session_id")


async def test_the_agent_records_a_turns_trace_as_itself_naming_the_user(mesh: Mesh, user: MeshUser) -> None:
    async with (
        grpc.aio.insecure_channel(mesh.addr("sessions")) as sessions_channel,
        grpc.aio.insecure_channel(mesh.addr("agent")) as agent_channel,
    ):
        session = await sessions_pb2_grpc.SessionServiceStub(sessions_channel).CreateSession(
            sessions_pb2.CreateSessionRequest(name="traced"), metadata=user.metadata
        )
        session_id = session.session.session_id
        await agent_pb2_grpc.AgentServiceStub(agent_channel).Chat(
            agent_pb2.ChatRequest(session_id=session_id, message=agent_pb2.Message(role="user", content="Hello")),
            metadata=user.metadata,
            timeout=60,
        )
    engine = create_async_engine(
        with_driver(mesh.env["DATABASE_URL"], "asyncpg"), connect_args={"server_settings": {"search_path": "evals"}}
    )
    try:

        async def recorded() -> list[str]:
            async with engine.connect() as conn:
                owners = [row.user_id for row in await conn.execute(TRACE_OF_SESSION, {"session_id": session_id})]
            assert owners, "no trace yet"
            return owners

        assert await eventually(recorded, timeout_s=15) == [user.user_id]
    finally:
        await engine.dispose()
