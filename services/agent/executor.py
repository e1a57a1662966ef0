"""Executing one run on this replica: recall memory, run the LangGraph turn, emit its
events into the run's channel, record how it ended, hand memory and the trace off.

The run is a task of its own, not part of any RPC: a client that goes away does not
stop it. Cancelling the task (CancelRun, another run's INTERRUPT/ROLLBACK, shutdown)
closes the model's HTTP stream at once; what the run produced so far is then kept in
the history, marked interrupted, unless it was rolled back.

The agent calls memory as itself on behalf of the run's user (a service token), so a
run needs no user token: it may start on any replica, queued long after its request.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Overwrite

from agentmesh.agent.v1 import agent_pb2
from agentmesh.evals.v1 import evals_pb2
from runtime.database_errors import database_unavailable
from runtime.errors import DomainError
from runtime.interceptors import DATABASE_UNAVAILABLE
from runtime.llm import ModelChain
from runtime.logging import get_logger
from runtime.service_identity import ServiceIdentity
from services.agent import metrics
from services.agent.graph import TurnContext, recursion_limit, stamped, start_turn
from services.agent.langfuse_tracing import LangfuseTracing
from services.agent.long_term_memory import LongTermMemory
from services.agent.outbox import OutboxDelivery, OutboxItem, memory_write, trace_record
from services.agent.run_events import RunChannel
from services.agent.run_messages import interrupt_event
from services.agent.run_rows import NewInterrupt, RunOutcome, RunRow
from services.agent.run_store import RunStore

log = get_logger(__name__)

CANCEL_INTERRUPT, CANCEL_ROLLBACK, CANCEL_SHUTDOWN = "interrupt", "rollback", "shutdown"
# agent_runs_total keeps the outcome names dashboards and alerts already use.
OUTCOME_LABELS = {"succeeded": "completed"}


@dataclass
class Execution:
    """What the executor learned while the run went, read when it ends."""

    channel: RunChannel
    started: float = field(default_factory=time.perf_counter)
    text: list[str] = field(default_factory=list)
    context: TurnContext | None = None
    cancel_action: str | None = None
    # The turn's memory search: started while the run was being created (`recall_ahead`),
    # else when it starts executing; the first model call awaits it.
    recall: asyncio.Task[list[str]] | None = None


def error_event(code: grpc.StatusCode, message: str, reason: str) -> agent_pb2.ChatEvent:
    return agent_pb2.ChatEvent(error=agent_pb2.RunError(code=code.value[0], message=message, reason=reason))


END_NOT_RECORDED = "the agent could not record the end of this turn (its database did not answer); send it again"
CANCELLED_MESSAGES = {
    CANCEL_INTERRUPT: ("the run was stopped; what it said so far is kept", "RUN_CANCELLED"),
    CANCEL_ROLLBACK: ("the run was cancelled and rolled back", "RUN_ROLLED_BACK"),
    CANCEL_SHUTDOWN: (
        "the agent replica running this turn shut down before it finished; send the message again",
        "RUN_ABORTED_BY_SHUTDOWN",
    ),
}


def cancelled_outcome(action: str) -> tuple[RunOutcome, agent_pb2.ChatEvent]:
    message, reason = CANCELLED_MESSAGES[action]
    if action == CANCEL_SHUTDOWN:
        code, status = grpc.StatusCode.UNAVAILABLE, "failed"
    else:
        code, status = grpc.StatusCode.CANCELLED, "cancelled"
    outcome = RunOutcome(
        status=status, error_code=code.value[0], error_message=message, error_reason=reason, cancel_action=action
    )
    return outcome, error_event(code, message, reason)


class RunExecutor:
    def __init__(
        self,
        *,
        graph: CompiledStateGraph,
        chain: ModelChain,
        memory: LongTermMemory,
        identity: ServiceIdentity,
        outbox: OutboxDelivery,
        tracing: LangfuseTracing,
        max_tool_rounds: int,
        traces_enabled: bool,
        store: RunStore,
        approval_ttl_s: float,
        end_retry_s: float = 30.0,
    ) -> None:
        self._graph = graph
        self._chain = chain
        self._memory = memory
        self._identity = identity
        self._outbox = outbox
        self._tracing = tracing
        self._recursion_limit = recursion_limit(max_tool_rounds)
        self._traces_enabled = traces_enabled
        self._store = store
        self._approval_ttl_s = approval_ttl_s
        self._end_retry_s = end_retry_s

    async def execute(self, run: RunRow, execution: Execution, resume: dict[str, Any] | None = None) -> RunRow | None:
        """Runs the turn to its end (or to a pause for a person) and records it; the task may
        be cancelled with `execution.cancel_action` set to say how to stop. With `resume`
        (decisions by tool call id) a paused run goes on from its checkpoint."""
        structlog.contextvars.bind_contextvars(session_id=run.session_id, run_id=run.run_id)
        channel = execution.channel
        emit = self._recording_emit(execution)
        metrics.runs_in_flight.inc()
        try:
            if resume is None:
                started = agent_pb2.RunStarted(run_id=run.run_id, model=self._chain.preferred_model())
                emit(agent_pb2.ChatEvent(started=started))
            if execution.recall is None:
                execution.recall = asyncio.create_task(self._recall(run.user_id, run.input), name="recall")
            execution.context = context = TurnContext(
                emit=emit,
                run_id=run.run_id,
                started=execution.started,
                pending_facts=execution.recall,
                announce_facts=resume is None,
            )
            graph_input = Command(resume=resume) if resume is not None else start_turn(HumanMessage(content=run.input))
            result = await self._graph.ainvoke(graph_input, self._run_config(run), context=context, durability="exit")
            paused = result.get("__interrupt__") if isinstance(result, dict) else None
            if paused:
                return await self._pause(run, execution, context, paused)
            outcome, last = self._succeeded(run, context, execution.started)
        except asyncio.CancelledError:
            action = execution.cancel_action or CANCEL_INTERRUPT
            # Uncancel: the recording below must run to its end.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if action != CANCEL_ROLLBACK:
                await self.keep_interrupted(run, "".join(execution.text))
            outcome, last = cancelled_outcome(action)
            log.info("run_cancelled", action=action)
        except DomainError as exc:
            outcome = RunOutcome(
                status="failed", error_code=exc.code.value[0], error_message=exc.message, error_reason=exc.reason
            )
            last = error_event(exc.code, exc.message, exc.reason)
        except Exception as exc:
            if database_unavailable(exc):
                # The database did not answer in time (its outage), not a bug: retryable.
                log.warning("run_failed_database_unavailable", error=type(exc).__name__)
                error = DATABASE_UNAVAILABLE
                code, message, reason = error.code, error.message, error.reason
            else:
                log.exception("run_crashed")
                code, message, reason = grpc.StatusCode.INTERNAL, "internal error", "INTERNAL"
            outcome = RunOutcome(status="failed", error_code=code.value[0], error_message=message, error_reason=reason)
            last = error_event(code, message, reason)
        finally:
            metrics.runs_in_flight.dec()
            recall = execution.recall
            if recall is not None and not recall.done():
                recall.cancel()  # the run ended before its first model call needed the search
            elif recall is not None and not recall.cancelled() and recall.exception() is not None:
                log.warning("memory_search_failed", error=type(recall.exception()).__name__)
        metrics.runs_total.labels(outcome=OUTCOME_LABELS.get(outcome.status, outcome.status)).inc()
        hand_offs = self._hand_offs(run, outcome, execution.context, last.completed.latency_ms)
        finished = await self._record_end(channel, outcome, last, hand_offs)
        if finished is None:
            log.warning("run_finished_elsewhere")
            return None
        if hand_offs:
            self._outbox.poke()
        log.info("run_ended", status=finished.status, model=finished.model)
        return finished

    async def _record_end(
        self, channel: RunChannel, outcome: RunOutcome, last: agent_pb2.ChatEvent, hand_offs: list[OutboxItem]
    ) -> RunRow | None:
        """Writes the run's end, retrying while the database does not answer (for about a
        lease: after that another replica fails the run as lost). If it never could, the
        callers following here still get a last event instead of waiting out their deadline."""
        deadline = time.monotonic() + self._end_retry_s
        while True:
            try:
                return await channel.finish(outcome, last, hand_offs)
            except (psycopg.Error, OSError) as exc:
                if time.monotonic() > deadline:
                    log.warning("run_end_not_recorded", error=type(exc).__name__)
                    channel.end_locally(
                        error_event(grpc.StatusCode.UNAVAILABLE, END_NOT_RECORDED, "DATABASE_UNAVAILABLE")
                    )
                    return None
                await asyncio.sleep(1.0)

    def recall_ahead(self, user_id: str, query: str) -> asyncio.Task[list[str]] | None:
        """Starts the memory search of a turn that is about to be created, so that it runs
        beside the session check and the run's insert instead of after them: the first token
        waits for the longest of them, not their sum. The search is the caller's own memories
        (as the run's would be); the caller cancels the task if no run starts here."""
        if not self._memory.enabled:
            return None
        return asyncio.create_task(self._recall(user_id, query), name="recall-ahead")

    async def _recall(self, user_id: str, query: str) -> list[str]:
        if not self._memory.enabled:
            return []
        try:
            metadata = await self._identity.metadata(on_behalf_of=user_id)
        except DomainError as exc:
            log.warning("memory_search_skipped", reason=exc.reason)
            metrics.memory_lookups_total.labels(result="error").inc()
            return []
        return await self._memory.recall(query, metadata)

    def _recording_emit(self, execution: Execution) -> Callable[[agent_pb2.ChatEvent], None]:
        channel = execution.channel

        def emit(event: agent_pb2.ChatEvent) -> None:
            if event.WhichOneof("event") == "token":
                execution.text.append(event.token.text)
            channel.emit(event)

        return emit

    def _run_config(self, run: RunRow) -> dict[str, Any]:
        return {
            "configurable": {"thread_id": run.session_id},
            "run_id": uuid.UUID(run.run_id),
            "recursion_limit": self._recursion_limit,
            **self._tracing.run_config(session_id=run.session_id, user_id=run.user_id),
        }

    async def _pause(self, run: RunRow, execution: Execution, context: TurnContext, paused: list[Any]) -> RunRow | None:
        """Records the interrupts the graph stopped at and ends the run's stream there."""
        calls = [call for item in paused for call in (getattr(item, "value", None) or {}).get("calls", [])]
        interrupts = [
            NewInterrupt(
                kind=call["kind"],
                tool_call_id=call["tool_call_id"],
                tool_name=call["name"],
                arguments_json=json.dumps(call["arguments"]),
                arguments_sha256=call["arguments_sha256"],
                question=call["question"],
            )
            for call in calls
        ]
        stored = await execution.channel.pause(
            lambda events: self._store.pause(
                run.run_id,
                prompt_tokens=sum(a.prompt_tokens for a in [*context.answers, *context.overhead]),
                completion_tokens=sum(a.completion_tokens for a in [*context.answers, *context.overhead]),
                interrupts=interrupts,
                ttl_s=self._approval_ttl_s,
                events=events,
            ),
            interrupt_event,
        )
        if stored is None:
            log.warning("run_paused_elsewhere")
            return None
        for item in interrupts:
            metrics.interrupts_total.labels(kind=item.kind).inc()
        log.info("run_paused", interrupts=len(stored))
        return await self._store.get(run.run_id)

    @staticmethod
    def _succeeded(run: RunRow, context: TurnContext, started: float) -> tuple[RunOutcome, agent_pb2.ChatEvent]:
        final = context.answers[-1]
        # A resumed run adds what it spent before its pauses (kept on its record), and a
        # compaction's summary call counts too.
        spent = [*context.answers, *context.overhead]
        prompt = run.prompt_tokens + sum(a.prompt_tokens for a in spent)
        completion = run.completion_tokens + sum(a.completion_tokens for a in spent)
        answer = str(final.message.text)
        latency_ms = context.latency_ms or round((time.perf_counter() - started) * 1000)
        outcome = RunOutcome(
            status="succeeded", output=answer, model=final.model, prompt_tokens=prompt, completion_tokens=completion
        )
        last = agent_pb2.ChatEvent(
            completed=agent_pb2.RunCompleted(
                message=agent_pb2.Message(role="assistant", content=answer),
                model=final.model,
                usage=agent_pb2.Usage(
                    prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
                ),
                latency_ms=latency_ms,
            )
        )
        return outcome, last

    async def keep_interrupted(self, run: RunRow, partial_text: str) -> None:
        """The user's message and what the answer had reached, marked interrupted, become
        part of the conversation (a stopped or crashed turn loses nothing the user saw)."""
        now = datetime.now(UTC).isoformat()
        question = stamped(HumanMessage(content=run.input), time=now, run_id=run.run_id)
        answer = stamped(AIMessage(content=partial_text), time=now, run_id=run.run_id, interrupted=True)
        try:
            await self._graph.aupdate_state(
                {"configurable": {"thread_id": run.session_id}},
                {"messages": [question, answer], "turn": Overwrite([])},
                as_node="commit",
            )
        except Exception:
            log.exception("interrupted_turn_not_kept")

    def _hand_offs(
        self, run: RunRow, outcome: RunOutcome, context: TurnContext | None, latency_ms: int
    ) -> list[OutboxItem]:
        """What a succeeded run owes memory and evals, recorded with its end (the outbox)."""
        if outcome.status != "succeeded" or context is None:
            return []
        items = []
        if self._memory.enabled:
            items.append(memory_write(run.user_id, self._memory.write_request(run, outcome.output, context.facts)))
        if self._traces_enabled:
            items.append(trace_record(trace_of(run, outcome, context, latency_ms)))
        return items


def trace_of(run: RunRow, outcome: RunOutcome, context: TurnContext, latency_ms: int) -> evals_pb2.Trace:
    created_at = Timestamp()
    created_at.GetCurrentTime()
    return evals_pb2.Trace(
        trace_id=run.run_id,
        session_id=run.session_id,
        user_id=run.user_id,
        input=run.input,
        output=outcome.output,
        model=outcome.model,
        latency_ms=latency_ms,
        usage=evals_pb2.TraceUsage(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens),
        tool_calls=[
            evals_pb2.TraceToolCall(
                name=call.name,
                arguments_json=call.arguments_json,
                result=result,
                decision=context.decisions.get(call.id, ""),
            )
            for call, result in context.tool_calls
        ],
        created_at=created_at,
    )
