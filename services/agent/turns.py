"""One agent turn, start to finish: validate, check the session, recall memory, take
the session's run lock, run the graph, emit events, hand memory and the trace off.

StreamChat runs the turn in its own task and relays its events through a queue, so a
client that goes away cancels the task at once (the RPC's done callback), which closes
the model's HTTP stream and releases the lock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from langchain_core.messages import HumanMessage
from langgraph.graph.state import CompiledStateGraph

from agentmesh.agent.v1 import agent_pb2
from agentmesh.evals.v1 import evals_pb2
from services.agent import metrics
from services.agent.client_message import user_message_text
from services.agent.graph import TurnContext, recursion_limit, start_turn
from services.agent.langfuse_tracing import LangfuseTracing
from services.agent.llm_chain import ModelChain
from services.agent.long_term_memory import LongTermMemory
from services.agent.run_lock import RunLocks
from services.agent.session_access import SessionAccess
from services.agent.trace_export import TraceExport
from services.common.clients import forward_metadata
from services.common.errors import DomainError
from services.common.logging import get_logger
from services.common.principal import Principal, current_principal

log = get_logger(__name__)

Emit = Callable[[agent_pb2.ChatEvent], None]


@dataclass(frozen=True)
class TurnResult:
    run_id: str
    session_id: str
    user_message: str
    answer: str
    model: str
    usage: agent_pb2.Usage
    tool_calls: list[tuple[agent_pb2.ToolCall, str]]
    facts: list[str]
    latency_ms: int

    def chat_response(self) -> agent_pb2.ChatResponse:
        return agent_pb2.ChatResponse(
            messages=[
                agent_pb2.Message(role="user", content=self.user_message),
                agent_pb2.Message(role="assistant", content=self.answer),
            ],
            usage=self.usage,
            model=self.model,
            run_id=self.run_id,
            tool_calls=[call for call, _ in self.tool_calls],
            memory_facts=self.facts,
            latency_ms=self.latency_ms,
        )

    def trace(self, user_id: str) -> evals_pb2.Trace:
        created_at = Timestamp()
        created_at.GetCurrentTime()
        return evals_pb2.Trace(
            trace_id=self.run_id,
            session_id=self.session_id,
            user_id=user_id,
            input=self.user_message,
            output=self.answer,
            model=self.model,
            latency_ms=self.latency_ms,
            usage=evals_pb2.TraceUsage(
                prompt_tokens=self.usage.prompt_tokens, completion_tokens=self.usage.completion_tokens
            ),
            tool_calls=[
                evals_pb2.TraceToolCall(name=call.name, arguments_json=call.arguments_json, result=result)
                for call, result in self.tool_calls
            ],
            created_at=created_at,
        )


def _error_event(code: grpc.StatusCode, message: str) -> agent_pb2.ChatEvent:
    return agent_pb2.ChatEvent(error=agent_pb2.RunError(code=code.value[0], message=message))


def _ignore(_: agent_pb2.ChatEvent) -> None:
    return None


class TurnRunner:
    def __init__(
        self,
        *,
        graph: CompiledStateGraph,
        chain: ModelChain,
        sessions: SessionAccess,
        locks: RunLocks,
        memory: LongTermMemory,
        traces: TraceExport,
        tracing: LangfuseTracing,
        max_message_chars: int,
        max_tool_rounds: int,
    ) -> None:
        self._graph = graph
        self._chain = chain
        self._sessions = sessions
        self._locks = locks
        self._memory = memory
        self._traces = traces
        self._tracing = tracing
        self._max_message_chars = max_message_chars
        self._recursion_limit = recursion_limit(max_tool_rounds)
        self._streams: set[asyncio.Task[TurnResult]] = set()

    async def chat(self, session_id: str, message: agent_pb2.Message) -> agent_pb2.ChatResponse:
        return (await self.run(session_id, message, _ignore)).chat_response()

    async def stream(
        self, session_id: str, message: agent_pb2.Message, rpc: grpc.aio.ServicerContext
    ) -> AsyncIterator[agent_pb2.ChatEvent]:
        events: asyncio.Queue[agent_pb2.ChatEvent | None] = asyncio.Queue()
        task = asyncio.create_task(self.run(session_id, message, events.put_nowait))
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)
        task.add_done_callback(lambda _: events.put_nowait(None))
        rpc.add_done_callback(lambda _: task.cancel())
        try:
            while (event := await events.get()) is not None:
                yield event
            task.result()  # a failed turn ends the stream with its status, after its error event
        finally:
            task.cancel()

    async def run(self, session_id: str, message: agent_pb2.Message, emit: Emit) -> TurnResult:
        started = time.perf_counter()
        content = user_message_text(message, self._max_message_chars)
        principal = current_principal()
        structlog.contextvars.bind_contextvars(session_id=session_id)
        # Memory is searched while the session is checked: both are network hops and
        # the search is scoped to the caller anyway.
        recall = asyncio.create_task(self._memory.recall(content))
        try:
            await self._sessions.require_own(session_id)
            async with self._locks.hold(session_id):
                facts = await recall
                result = await self._run_locked(session_id, content, facts, principal, emit, started)
        finally:
            recall.cancel()
        # Sent only once the session's lock is released: a client that sends its next
        # message as soon as it sees `completed` must not find the session busy.
        emit(
            agent_pb2.ChatEvent(
                completed=agent_pb2.RunCompleted(
                    message=agent_pb2.Message(role="assistant", content=result.answer),
                    model=result.model,
                    usage=result.usage,
                    latency_ms=result.latency_ms,
                )
            )
        )
        log.info("turn_completed", run_id=result.run_id, model=result.model, latency_ms=result.latency_ms)
        self._hand_off(result, principal)
        return result

    async def _run_locked(
        self, session_id: str, content: str, facts: list[str], principal: Principal, emit: Emit, started: float
    ) -> TurnResult:
        run_id = str(uuid.uuid4())
        emit(agent_pb2.ChatEvent(started=agent_pb2.RunStarted(run_id=run_id, model=self._chain.preferred_model())))
        if facts:
            emit(agent_pb2.ChatEvent(memory=agent_pb2.MemoryUsed(facts=facts)))
        context = TurnContext(facts=facts, emit=emit)
        metrics.runs_in_flight.inc()
        try:
            await self._graph.ainvoke(
                start_turn(HumanMessage(content=content)),
                self._run_config(run_id, session_id, principal.user_id),
                context=context,
                durability="exit",
            )
        except asyncio.CancelledError:
            metrics.runs_total.labels(outcome="cancelled").inc()
            log.info("turn_cancelled", run_id=run_id)
            raise
        except DomainError as exc:
            metrics.runs_total.labels(outcome="failed").inc()
            emit(_error_event(exc.code, exc.message))
            raise
        except Exception:
            metrics.runs_total.labels(outcome="failed").inc()
            emit(_error_event(grpc.StatusCode.INTERNAL, "internal error"))
            raise
        finally:
            metrics.runs_in_flight.dec()
        result = self._result(run_id, session_id, content, facts, context, started)
        metrics.runs_total.labels(outcome="completed").inc()
        return result

    def _run_config(self, run_id: str, session_id: str, user_id: str) -> dict[str, Any]:
        return {
            "configurable": {"thread_id": session_id},
            "run_id": uuid.UUID(run_id),
            "recursion_limit": self._recursion_limit,
            **self._tracing.run_config(session_id=session_id, user_id=user_id),
        }

    @staticmethod
    def _result(
        run_id: str, session_id: str, content: str, facts: list[str], context: TurnContext, started: float
    ) -> TurnResult:
        final = context.answers[-1]
        prompt = sum(a.prompt_tokens for a in context.answers)
        completion = sum(a.completion_tokens for a in context.answers)
        return TurnResult(
            run_id=run_id,
            session_id=session_id,
            user_message=content,
            answer=str(final.message.text),
            model=final.model,
            usage=agent_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
            tool_calls=context.tool_calls,
            facts=facts,
            latency_ms=round((time.perf_counter() - started) * 1000),
        )

    def _hand_off(self, result: TurnResult, principal: Principal) -> None:
        metadata = forward_metadata(principal.token)
        self._memory.remember(
            user_message=result.user_message,
            answer=result.answer,
            session_id=result.session_id,
            context_facts=result.facts,
            metadata=metadata,
        )
        self._traces.submit(result.trace(principal.user_id), metadata)

    async def cancel_streams(self) -> None:
        for task in list(self._streams):
            task.cancel()
        if self._streams:
            await asyncio.wait(set(self._streams))
