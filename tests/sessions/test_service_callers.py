"""Services calling sessions and memory with a service token: always on behalf of a user.

Before: a service token without `x-on-behalf-of` (subject `service:<name>`), or with a
header that is not a user id, reached the owner-scoped queries and failed with INTERNAL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from runtime.service_identity import ServiceIdentity, dev_service_credential
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser


@pytest.fixture
async def agent_identity(auth_channel: grpc.aio.Channel) -> AsyncIterator[ServiceIdentity]:
    identity = ServiceIdentity("agent", dev_service_credential("agent"), auth_channel)
    yield identity
    await identity.close()


@pytest.fixture
async def stubs(mesh: Mesh) -> AsyncIterator[tuple]:
    async with (
        grpc.aio.insecure_channel(mesh.addr("sessions")) as sessions_channel,
        grpc.aio.insecure_channel(mesh.addr("memory")) as memory_channel,
    ):
        yield (
            sessions_pb2_grpc.SessionServiceStub(sessions_channel),
            memory_pb2_grpc.MemoryServiceStub(memory_channel),
        )


async def test_a_service_must_name_a_user(stubs, agent_identity: ServiceIdentity, user: MeshUser) -> None:
    sessions, memory = stubs
    created = (
        await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="mine"), metadata=user.metadata)
    ).session

    bare = await agent_identity.metadata()
    bogus = (*bare, ("x-on-behalf-of", "NOT-A-USER"))
    acting = await agent_identity.metadata(on_behalf_of=user.user_id)
    for metadata, expected in [
        (bare, (grpc.StatusCode.PERMISSION_DENIED, "ON_BEHALF_OF_REQUIRED")),
        (bogus, (grpc.StatusCode.INVALID_ARGUMENT, "ON_BEHALF_OF_INVALID")),
    ]:
        get = await rpc_failure(
            sessions.GetSession(sessions_pb2.GetSessionRequest(session_id=created.session_id), metadata=metadata)
        )
        listed = await rpc_failure(memory.ListMemories(memory_pb2.ListMemoriesRequest(), metadata=metadata))
        assert (get.code, get.reason) == expected
        assert (listed.code, listed.reason) == expected

    got = await sessions.GetSession(sessions_pb2.GetSessionRequest(session_id=created.session_id), metadata=acting)
    assert got.session.session_id == created.session_id
