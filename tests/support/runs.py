"""Runs of the agent service in tests (tests/agent/test_runs.py, test_run_replicas.py):
creating, reading and following them, and stalling the offline model they stream from."""

from __future__ import annotations

import grpc
import httpx

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from tests.support.users import MeshUser
from tests.support.waiting import eventually

# Model names of their own, so faults injected into the offline LLM reach only these replicas.
MODEL = "runs-test-model"
REPLICA_SETTINGS = {"LLM_MODELS": MODEL, "MEMORY_ENABLED": "false", "RUN_LEASE_S": "2"}


async def stall(control: httpx.AsyncClient, *, after_tokens: int, count: int = 1, model: str = MODEL) -> None:
    fault = {"model": model, "kind": "stall", "stall_s": 20, "after_tokens": after_tokens, "count": count}
    response = await control.post("/_offline/faults", json=fault)
    assert response.status_code == 200, response.text


def message(content: str) -> agent_pb2.Message:
    return agent_pb2.Message(role="user", content=content)


async def create_run(
    stub: agent_pb2_grpc.AgentServiceStub,
    user: MeshUser,
    session_id: str,
    content: str,
    strategy: int = agent_pb2.MULTITASK_STRATEGY_UNSPECIFIED,
) -> agent_pb2.Run:
    request = agent_pb2.CreateRunRequest(session_id=session_id, message=message(content), multitask_strategy=strategy)
    return (await stub.CreateRun(request, metadata=user.metadata, timeout=10)).run


async def get_run(stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, run_id: str) -> agent_pb2.Run:
    request = agent_pb2.GetRunRequest(session_id=session_id, run_id=run_id)
    return (await stub.GetRun(request, metadata=user.metadata, timeout=10)).run


async def until_status(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, run_id: str, *statuses: int
) -> agent_pb2.Run:
    async def check() -> agent_pb2.Run:
        run = await get_run(stub, user, session_id, run_id)
        assert run.status in statuses, agent_pb2.RunStatus.Name(run.status)
        return run

    return await eventually(check, timeout_s=30, interval_s=0.1)


async def follow(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, run_id: str, after_seq: int = 0
) -> list[agent_pb2.ChatEvent]:
    request = agent_pb2.StreamRunRequest(session_id=session_id, run_id=run_id, after_seq=after_seq)
    return [event async for event in stub.StreamRun(request, metadata=user.metadata, timeout=60)]


async def history(stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str) -> list[agent_pb2.Message]:
    request = agent_pb2.GetHistoryRequest(session_id=session_id)
    return list((await stub.GetHistory(request, metadata=user.metadata, timeout=10)).messages)


async def has_tokens(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, run_id: str, count: int
) -> None:
    run = await get_run(stub, user, session_id, run_id)
    assert run.status == agent_pb2.RUN_STATUS_RUNNING
    # started + `count` tokens stored (events are written every few ms).
    assert run.last_seq >= 1 + count, run.last_seq


async def create_with_quota_room(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, content: str
) -> agent_pb2.Run:
    """ENQUEUE, waiting while the user is at MAX_ACTIVE_RUNS_PER_USER (4 by default)."""

    async def created() -> agent_pb2.Run:
        try:
            return await create_run(stub, user, session_id, content, agent_pb2.MULTITASK_STRATEGY_ENQUEUE)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            raise AssertionError("the user's runs never made room") from exc

    return await eventually(created, timeout_s=30)


async def last_event(call: grpc.aio.UnaryStreamCall) -> str:
    last = ""
    try:
        while (event := await call.read()) is not grpc.aio.EOF:
            last = str(event.WhichOneof("event"))
    except grpc.aio.AioRpcError:
        pass  # a failed run ends its stream with an error status after its error event
    return last
