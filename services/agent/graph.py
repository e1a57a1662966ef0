"""The agent's LangGraph: chat node, tool node, loop until the model stops calling tools.

State keeps two lists. `messages` is the conversation as committed by finished turns;
`turn` is the turn in progress (the user's message, tool calls, tool results). Only the
last node, `commit`, moves a finished turn into `messages`, so a cancelled or failed
turn leaves the conversation as it was: no dangling tool call, no unanswered user
message. The next turn overwrites `turn`.

Runs use `durability="exit"`: one checkpoint write per turn instead of one per step.

Tool calls that need a person (TOOLS_REQUIRE_APPROVAL, `ask_user`) are not run by
`tools`: `review` pauses the run with LangGraph's `interrupt()` (the pause lives in the
checkpoint, so any replica can resume it after any restart) and turns the decisions
into tool results. Calls that need nobody run at once, before the pause.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal, NotRequired, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, interrupt

from agentmesh.agent.v1 import agent_pb2
from runtime.llm import ModelAnswer, ModelChain
from services.agent.approvals import (
    ANSWER,
    APPROVE,
    EDIT,
    REJECTED_RESULT,
    UNANSWERED_RESULT,
    ApprovalPolicy,
    arguments_sha256,
    pending_request,
)
from services.agent.compaction import compaction_cut, needs_compaction, summarise
from services.agent.context_window import context_window
from services.agent.system_prompt import SystemPrompt
from services.agent.tools.registry import ToolRegistry


class ConversationState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    turn: Annotated[list[AnyMessage], add_messages]
    # CONTEXT_STRATEGY=summarize: the running summary of `messages[:summarized]`.
    summary: NotRequired[str]
    summarized: NotRequired[int]


@dataclass
class TurnContext:
    """Per-run inputs and what the nodes observed, read by the turn runner afterwards."""

    emit: Callable[[agent_pb2.ChatEvent], None]
    run_id: str = ""
    # The turn's memory search, still running while LangGraph loads the checkpoint: the
    # first model call waits for it (`recalled`), not the graph's start.
    pending_facts: Awaitable[list[str]] | None = None
    # A new turn shows the facts it was given (MemoryUsed); a resumed one showed them already.
    announce_facts: bool = True
    facts: list[str] = field(default_factory=list)
    answers: list[ModelAnswer] = field(default_factory=list)
    tool_calls: list[tuple[agent_pb2.ToolCall, str]] = field(default_factory=list)
    # tool_call_id -> the person's decision ("approve", "edit", ...), for the trace.
    decisions: dict[str, str] = field(default_factory=dict)
    # Model calls that were not answers (summaries): counted in the run's usage.
    overhead: list[ModelAnswer] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    # Set by the commit node, so the history and the `completed` event show one latency.
    latency_ms: int = 0

    async def recalled(self) -> list[str]:
        """The facts the memory search found, waiting for it the first time."""
        if self.pending_facts is not None:
            pending, self.pending_facts = self.pending_facts, None
            self.facts = await pending
            if self.facts and self.announce_facts:
                self.emit(agent_pb2.ChatEvent(memory=agent_pb2.MemoryUsed(facts=self.facts)))
        return self.facts


def start_turn(message: AnyMessage) -> dict[str, Overwrite]:
    """Graph input of a new turn: replaces whatever a cancelled turn left in `turn`."""
    return {"turn": Overwrite([message])}


# Nodes and routers are coroutines: LangGraph runs a plain function in a thread pool,
# which costs a thread hop per step on every turn.
async def _route(state: ConversationState) -> Literal["tools", "commit"]:
    last = state["turn"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else "commit"


def _unanswered_calls(turn: list[AnyMessage]) -> list[dict]:
    """Calls of the turn's last model message that no tool message answers yet."""
    for index in range(len(turn) - 1, -1, -1):
        message = turn[index]
        if isinstance(message, AIMessage) and message.tool_calls:
            answered = {m.tool_call_id for m in turn[index + 1 :] if isinstance(m, ToolMessage)}
            return [call for call in message.tool_calls if (call.get("id") or "") not in answered]
    return []


async def _after_tools(state: ConversationState) -> Literal["review", "chat"]:
    return "review" if _unanswered_calls(state["turn"]) else "chat"


def tool_call_message(call: dict) -> agent_pb2.ToolCall:
    return agent_pb2.ToolCall(id=call.get("id") or "", name=call["name"], arguments_json=json.dumps(call["args"]))


# What the history shows about each message lives in its response_metadata under this key
# (never sent to the model).
META_KEY = "agentmesh"


def stamped(message: AnyMessage, **meta: object) -> AnyMessage:
    metadata = dict(message.response_metadata or {})
    metadata[META_KEY] = {**metadata.get(META_KEY, {}), **meta}
    return message.model_copy(update={"response_metadata": metadata})


async def _commit(state: ConversationState, runtime: Runtime[TurnContext]) -> dict[str, object]:
    """Moves the finished turn into the conversation, each message stamped with its time and
    run, the answer with its model, usage, latency and the memory the model was given."""
    context = runtime.context
    now = datetime.now(UTC).isoformat()
    turn = [stamped(m, time=now, run_id=context.run_id) for m in state["turn"]]
    for index, message in enumerate(turn):
        if isinstance(message, ToolMessage) and message.tool_call_id in context.decisions:
            turn[index] = stamped(message, decision=context.decisions[message.tool_call_id])
    context.latency_ms = round((time.perf_counter() - context.started) * 1000)
    if turn and isinstance(turn[-1], AIMessage) and context.answers:
        final = context.answers[-1]
        turn[-1] = stamped(
            turn[-1],
            model=final.model,
            prompt_tokens=sum(a.prompt_tokens for a in context.answers),
            completion_tokens=sum(a.completion_tokens for a in context.answers),
            latency_ms=context.latency_ms,
            memory_facts=list(context.facts),
        )
    return {"messages": turn, "turn": Overwrite([])}


def build_agent_graph(
    *,
    chain: ModelChain,
    tools: ToolRegistry,
    prompt: SystemPrompt,
    max_context_tokens: int,
    max_tool_rounds: int,
    checkpointer: BaseCheckpointSaver | None,
    max_tool_calls_per_round: int = 8,
    policy: ApprovalPolicy | None = None,
    context_strategy: str = "summarize",
) -> CompiledStateGraph:
    policy = policy or ApprovalPolicy.from_names([])

    async def chat(state: ConversationState, config: RunnableConfig, runtime: Runtime[TurnContext]) -> dict:
        context = runtime.context
        facts = await context.recalled()
        rounds = sum(1 for m in state["turn"] if isinstance(m, AIMessage) and m.tool_calls)
        summary, covered = state.get("summary", ""), state.get("summarized", 0)
        history = state["messages"][covered:]
        updates: dict[str, object] = {}
        system = prompt.render(facts, summary=summary)
        if (
            context_strategy == "summarize"
            and rounds == 0
            and needs_compaction(system, history, state["turn"], max_context_tokens)
        ):
            cut = compaction_cut(history, max_context_tokens)
            if cut:
                summary, spent = await summarise(chain, summary, history[:cut])
                context.overhead.append(spent)
                covered += cut
                history = history[cut:]
                updates = {"summary": summary, "summarized": covered}
                system = prompt.render(facts, summary=summary)
        window = context_window(system, history, state["turn"], max_context_tokens)
        emit = context.emit

        def on_text(text: str) -> None:
            emit(agent_pb2.ChatEvent(token=agent_pb2.TokenDelta(text=text)))

        # Past the tool budget the model gets no tools, so it has to answer.
        answer = await chain.answer(
            window, with_tools=bool(tools.names) and rounds < max_tool_rounds, on_text=on_text, config=config
        )
        context.answers.append(answer)
        for call in answer.message.tool_calls:
            emit(agent_pb2.ChatEvent(tool_call=tool_call_message(call)))
        return {"turn": [answer.message], **updates}

    def report(context: TurnContext, call: dict, result: ToolMessage, decision: str = "") -> None:
        content = result.text
        if decision != "reject":  # a rejected call did not run: it has no result to show
            event = agent_pb2.ToolResult(id=result.tool_call_id, name=call["name"], content=content)
            context.emit(agent_pb2.ChatEvent(tool_result=event))
        context.tool_calls.append((tool_call_message(call), content))
        if decision:
            context.decisions[call.get("id") or ""] = decision

    async def run_tools(state: ConversationState, runtime: Runtime[TurnContext]) -> dict:
        context = runtime.context
        last = state["turn"][-1]
        assert isinstance(last, AIMessage)
        # A round runs at most max_tool_calls_per_round calls; the rest are answered, not run,
        # so the model learns why and can ask again next round (every call needs an answer).
        allowed, refused = last.tool_calls[:max_tool_calls_per_round], last.tool_calls[max_tool_calls_per_round:]
        now = [call for call in allowed if not policy.needs_person(call["name"])]
        results: list[ToolMessage] = await asyncio.gather(*(tools.run(call) for call in now))
        refusals = [
            ToolMessage(
                content=f"Not run: at most {max_tool_calls_per_round} tool calls per round. "
                "Call it again in the next round if you still need it.",
                tool_call_id=call.get("id") or "",
                name=call["name"],
                status="error",
            )
            for call in refused
        ]
        for call, result in zip([*now, *refused], [*results, *refusals], strict=True):
            report(context, call, result)
        return {"turn": [*results, *refusals]}

    async def review(state: ConversationState, runtime: Runtime[TurnContext]) -> dict:
        """Pauses for a person's decision on each waiting call, then applies them."""
        context = runtime.context
        waiting = _unanswered_calls(state["turn"])
        decisions: dict = interrupt({"calls": [pending_request(call) for call in waiting]})
        results = []
        for call in waiting:
            decided = decisions.get(call.get("id") or "") or {}
            result, decision = await apply_decision(call, decided)
            report(context, call, result, decision)
            results.append(result)
        return {"turn": results}

    async def apply_decision(call: dict, decided: dict) -> tuple[ToolMessage, str]:
        call_id, decision = call.get("id") or "", str(decided.get("decision", "reject"))
        if decision == ANSWER:
            answer = str(decided.get("answer", "")) or UNANSWERED_RESULT
            return ToolMessage(content=answer, tool_call_id=call_id, name=call["name"]), decision
        if decision == EDIT:
            edited = {**call, "args": decided.get("arguments") or {}}
            return await tools.run(edited), decision
        # An approval counts only for the very arguments that were shown.
        if decision == APPROVE and decided.get("arguments_sha256") == arguments_sha256(call.get("args") or {}):
            return await tools.run(call), decision
        message = ToolMessage(content=REJECTED_RESULT, tool_call_id=call_id, name=call["name"], status="error")
        return message, "reject"

    builder = StateGraph(ConversationState, context_schema=TurnContext)
    builder.add_node("chat", chat)
    builder.add_node("tools", run_tools)
    builder.add_node("review", review)
    builder.add_node("commit", _commit)
    builder.add_edge(START, "chat")
    builder.add_conditional_edges("chat", _route, ["tools", "commit"])
    builder.add_conditional_edges("tools", _after_tools, ["review", "chat"])
    builder.add_edge("review", "chat")
    builder.add_edge("commit", END)
    return builder.compile(checkpointer=checkpointer, name="agentmesh-agent")


def recursion_limit(max_tool_rounds: int) -> int:
    # chat + tools + review per round, then the answering chat and the commit, plus one spare.
    return 3 * max_tool_rounds + 3
