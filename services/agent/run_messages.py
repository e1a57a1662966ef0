"""Runs and their events as protobuf messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.agent.v1 import agent_pb2
from services.agent.run_rows import InterruptRow, RunRow

STATUSES = {
    "pending": agent_pb2.RUN_STATUS_PENDING,
    "running": agent_pb2.RUN_STATUS_RUNNING,
    "interrupted": agent_pb2.RUN_STATUS_INTERRUPTED,
    "succeeded": agent_pb2.RUN_STATUS_SUCCEEDED,
    "failed": agent_pb2.RUN_STATUS_FAILED,
    "cancelled": agent_pb2.RUN_STATUS_CANCELLED,
}
STRATEGIES = {
    "reject": agent_pb2.MULTITASK_STRATEGY_REJECT,
    "enqueue": agent_pb2.MULTITASK_STRATEGY_ENQUEUE,
    "interrupt": agent_pb2.MULTITASK_STRATEGY_INTERRUPT,
    "rollback": agent_pb2.MULTITASK_STRATEGY_ROLLBACK,
}


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def run_message(run: RunRow, pending: list[InterruptRow] | None = None) -> agent_pb2.Run:
    message = agent_pb2.Run(
        run_id=run.run_id,
        session_id=run.session_id,
        status=STATUSES[run.status],
        input=agent_pb2.Message(role="user", content=run.input),
        model=run.model,
        usage=agent_pb2.Usage(
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            total_tokens=run.prompt_tokens + run.completion_tokens,
        ),
        create_time=_timestamp(run.create_time),
        start_time=_timestamp(run.start_time),
        end_time=_timestamp(run.end_time),
        multitask_strategy=STRATEGIES.get(run.multitask_strategy, agent_pb2.MULTITASK_STRATEGY_UNSPECIFIED),
        last_seq=run.last_seq,
    )
    if run.output or run.status == "succeeded":
        message.output.CopyFrom(agent_pb2.Message(role="assistant", content=run.output))
    message.interrupts.extend(interrupt_message(row) for row in pending or [])
    if run.error_code:
        message.error.CopyFrom(
            agent_pb2.RunError(code=run.error_code, message=run.error_message, reason=run.error_reason)
        )
    return message


def chat_response(user_message: str, events: list[agent_pb2.ChatEvent]) -> agent_pb2.ChatResponse:
    """A finished run's events as the unary Chat answer."""
    response = agent_pb2.ChatResponse()
    for event in events:
        kind = event.WhichOneof("event")
        response.run_id = event.run_id
        if kind == "tool_call":
            response.tool_calls.append(event.tool_call)
        elif kind == "memory":
            response.memory_facts.extend(event.memory.facts)
        elif kind == "completed":
            response.messages.append(agent_pb2.Message(role="user", content=user_message))
            response.messages.append(event.completed.message)
            response.usage.CopyFrom(event.completed.usage)
            response.model = event.completed.model
            response.latency_ms = event.completed.latency_ms
    return response


KINDS = {"tool_approval": agent_pb2.INTERRUPT_KIND_TOOL_APPROVAL, "question": agent_pb2.INTERRUPT_KIND_QUESTION}
DECISIONS = {
    "approve": agent_pb2.DECISION_APPROVE,
    "reject": agent_pb2.DECISION_REJECT,
    "edit": agent_pb2.DECISION_EDIT,
    "answer": agent_pb2.DECISION_ANSWER,
}
DECISION_NAMES = {value: name for name, value in DECISIONS.items()}


def interrupt_message(row: InterruptRow, last: bool = False) -> agent_pb2.RunInterrupt:
    return agent_pb2.RunInterrupt(
        interrupt_id=row.interrupt_id,
        kind=KINDS[row.kind],
        tool_call=agent_pb2.ToolCall(id=row.tool_call_id, name=row.tool_name, arguments_json=row.arguments_json),
        arguments_sha256=row.arguments_sha256,
        question=row.question,
        expires_at=_timestamp(row.expires_at),
        last=last,
    )


def interrupt_event(row: InterruptRow, last: bool) -> agent_pb2.ChatEvent:
    return agent_pb2.ChatEvent(interrupt=interrupt_message(row, last))


def decision_message(row: InterruptRow) -> agent_pb2.RunDecision:
    return agent_pb2.RunDecision(
        interrupt=interrupt_message(row),
        decision=DECISIONS.get(row.decision or "", agent_pb2.DECISION_UNSPECIFIED),
        edited_arguments_json=row.edited_arguments_json,
        answer=row.answer,
        decided_by=row.decided_by or "",
        decide_time=_timestamp(row.decide_time),
    )
