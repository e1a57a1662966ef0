"""Memory service fixtures: stubs on the mesh's memory service and a second replica."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from agentmesh.memory.v1 import memory_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.support.memory import start_replica


@pytest.fixture
async def memory_stub(mesh: Mesh) -> AsyncIterator[memory_pb2_grpc.MemoryServiceStub]:
    async with grpc.aio.insecure_channel(mesh.addr("memory")) as channel:
        yield memory_pb2_grpc.MemoryServiceStub(channel)


@pytest.fixture(scope="module")
def second_replica(mesh: Mesh) -> Iterator[ChildProcess]:
    replica = start_replica(mesh, "-2")
    yield replica
    replica.stop()


@pytest.fixture
async def replica_stub(second_replica: ChildProcess) -> AsyncIterator[memory_pb2_grpc.MemoryServiceStub]:
    async with grpc.aio.insecure_channel(second_replica.addr) as channel:
        yield memory_pb2_grpc.MemoryServiceStub(channel)
