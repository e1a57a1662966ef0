"""Fixtures for the mesh-wide tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from meshctl.mesh import Mesh


@pytest.fixture
async def channels(mesh: Mesh) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """Channels to the services that hold a user's data, by service name."""
    names = ("auth", "sessions", "agent", "memory")
    opened = {name: grpc.aio.insecure_channel(mesh.addr(name)) for name in names}
    yield opened
    for channel in opened.values():
        await channel.close()
