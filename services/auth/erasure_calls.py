"""The auth service's calls to the other services' `EraseUserData`, made as itself.

The auth service signs its own service token (it holds the keys), so an erasure needs no
round trip to IssueServiceToken; the token is cached and renewed at half its lifetime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from runtime.clients import open_channel
from runtime.errors import error_from_rpc
from services.auth.tokens import AccessTokenIssuer

SERVICE_NAME = "auth"
TOKEN_TTL_S = 300
# The order of the steps: the sessions service names the sessions the agent and evals
# erase by; the agent goes before memory and evals because its outbox may still hold a
# memory write or a trace of the user, which must not land after their erasure.
STEPS = ("sessions", "agent", "memory", "evals")


@dataclass(frozen=True)
class StepResult:
    counts: dict[str, int]
    session_ids: list[str] | None = field(default=None)


class SelfServiceToken:
    def __init__(self, issuer: AccessTokenIssuer) -> None:
        self._issuer = issuer
        self._token = ""
        self._renew_at = 0.0

    def metadata(self) -> tuple[tuple[str, str], ...]:
        if not self._token or time.time() >= self._renew_at:
            self._token, _ = self._issuer.issue_service(service=SERVICE_NAME, ttl_s=TOKEN_TTL_S)
            self._renew_at = time.time() + TOKEN_TTL_S / 2
        return (("authorization", f"Bearer {self._token}"),)


class ServiceErasers:
    """One `EraseUserData` client per service."""

    def __init__(self, addrs: dict[str, str], token: SelfServiceToken, timeout_s: float) -> None:
        self._channels = {name: open_channel(addr) for name, addr in addrs.items()}
        self._token = token
        self._timeout_s = timeout_s
        self._sessions = sessions_pb2_grpc.SessionServiceStub(self._channels["sessions"])
        self._agent = agent_pb2_grpc.AgentServiceStub(self._channels["agent"])
        self._memory = memory_pb2_grpc.MemoryServiceStub(self._channels["memory"])
        self._evals = evals_pb2_grpc.EvalServiceStub(self._channels["evals"])

    async def erase(self, step: str, erasure_id: str, user_id: str, session_ids: list[str]) -> StepResult:
        """Runs one step; raises a DomainError (UNAVAILABLE, ...) when the service fails."""
        call = {"metadata": self._token.metadata(), "timeout": self._timeout_s}
        try:
            if step == "sessions":
                found = await self._sessions.EraseUserData(
                    sessions_pb2.EraseUserDataRequest(erasure_id=erasure_id, user_id=user_id), **call
                )
                return StepResult(dict(found.counts), list(found.session_ids))
            if step == "agent":
                request = agent_pb2.EraseUserDataRequest(
                    erasure_id=erasure_id, user_id=user_id, session_ids=session_ids
                )
                return StepResult(dict((await self._agent.EraseUserData(request, **call)).counts))
            if step == "memory":
                request = memory_pb2.EraseUserDataRequest(erasure_id=erasure_id, user_id=user_id)
                return StepResult(dict((await self._memory.EraseUserData(request, **call)).counts))
            if step == "evals":
                request = evals_pb2.EraseUserDataRequest(
                    erasure_id=erasure_id, user_id=user_id, session_ids=session_ids
                )
                return StepResult(dict((await self._evals.EraseUserData(request, **call)).counts))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what=f"the {step} service (erasing a deleted account)") from exc
        raise ValueError(f"unknown erasure step {step!r}")

    async def forget_session_ids(self, erasure_id: str, user_id: str) -> None:
        """The last call of a job: the sessions service's receipt drops the session ids."""
        request = sessions_pb2.EraseUserDataRequest(erasure_id=erasure_id, user_id=user_id, forget_session_ids=True)
        try:
            await self._sessions.EraseUserData(request, metadata=self._token.metadata(), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what="the sessions service (erasing a deleted account)") from exc

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
