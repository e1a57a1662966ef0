"""A replica at MAX_RUNNING_RUNS refuses a new turn at once (UNAVAILABLE, AGENT_AT_CAPACITY,
a retry hint) instead of slowing down the turns it has, and takes turns again once one ends."""

from __future__ import annotations

import grpc
import httpx
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from tests.support.agent import NewSession, StartAgent
from tests.support.runs import create_run, message, stall, until_status
from tests.support.users import MeshUser

MODEL = "capacity-test-model"


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo on the status")


async def test_a_full_replica_refuses_new_turns_with_a_retry_hint_until_one_ends(
    start_agent: StartAgent, llm_control: httpx.AsyncClient, user: MeshUser, new_session: NewSession
) -> None:
    child = await start_agent(
        "-capacity", LLM_MODELS=MODEL, MEMORY_ENABLED="false", EVALS_ENABLED="false", MAX_RUNNING_RUNS="1"
    )
    await stall(llm_control, after_tokens=1, model=MODEL)
    async with grpc.aio.insecure_channel(child.addr) as channel:
        agent = agent_pb2_grpc.AgentServiceStub(channel)
        busy, other = await new_session(user), await new_session(user)
        held = await create_run(agent, user, busy, "hold the only slot")
        await until_status(agent, user, busy, held.run_id, agent_pb2.RUN_STATUS_RUNNING)

        chat = agent_pb2.ChatRequest(session_id=other, message=message("hello"))
        try:
            await agent.Chat(chat, metadata=user.metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            refused = exc
        else:
            raise AssertionError("a second turn started on a replica capped at one")
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(refused)
        assert info.reason == "AGENT_AT_CAPACITY"
        assert info.metadata["retry_after_s"] == "1" and info.metadata["limit"] == "1"
        # Refused before anything was written: the session has no run to show for it.
        listed = await agent.ListRuns(agent_pb2.ListRunsRequest(session_id=other), metadata=user.metadata)
        assert list(listed.runs) == []

        await agent.CancelRun(
            agent_pb2.CancelRunRequest(session_id=busy, run_id=held.run_id), metadata=user.metadata, timeout=10
        )
        await until_status(agent, user, busy, held.run_id, agent_pb2.RUN_STATUS_CANCELLED)
        answered = await agent.Chat(chat, metadata=user.metadata, timeout=30)
        assert answered.messages[-1].content
