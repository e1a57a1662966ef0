"""The agent's LangGraph: chat node, tool node, loop until the model stops calling tools.

State keeps two lists. `messages` is the conversation as committed by finished turns;
`turn` is the turn in progress (the user's message, tool calls, tool results). Only the
last node, `commit`, moves a finished turn into `messages`, so a cancelled or failed
turn leaves the conversation as it was: no dangling tool call, no unanswered user
message. The next turn overwrites `turn`.

Runs use `durability="exit"`: one checkpoint write per turn instead of one per step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from agentmesh.agent.v1 import agent_pb2
from services.agent.context_window import context_window
from services.agent.llm_chain import ModelAnswer, ModelChain
from services.agent.system_prompt import SystemPrompt
from services.agent.tools.registry import ToolRegistry


class ConversationState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    turn: Annotated[list[AnyMessage], add_messages]


@dataclass
class TurnContext:
    """Per-run inputs and what the nodes observed, read by the turn runner afterwards."""

    facts: list[str]
    emit: Callable[[agent_pb2.ChatEvent], None]
    answers: list[ModelAnswer] = field(default_factory=list)
    tool_calls: list[tuple[agent_pb2.ToolCall, str]] = field(default_factory=list)


def start_turn(message: AnyMessage) -> dict[str, Overwrite]:
    """Graph input of a new turn: replaces whatever a cancelled turn left in `turn`."""
    return {"turn": Overwrite([message])}


# Nodes and routers are coroutines: LangGraph runs a plain function in a thread pool,
# which costs a thread hop per step on every turn.
async def _route(state: ConversationState) -> Literal["tools", "commit"]:
    last = state["turn"][-1]
    return "tools" if isinstance(last, AIMessage) and last.tool_calls else "commit"


async def _commit(state: ConversationState) -> dict[str, object]:
    return {"messages": state["turn"], "turn": Overwrite([])}


def build_agent_graph(
    *,
    chain: ModelChain,
    tools: ToolRegistry,
    prompt: SystemPrompt,
    max_context_tokens: int,
    max_tool_rounds: int,
    checkpointer: BaseCheckpointSaver | None,
    max_tool_calls_per_round: int = 8,
) -> CompiledStateGraph:
    async def chat(state: ConversationState, config: RunnableConfig, runtime: Runtime[TurnContext]) -> dict:
        context = runtime.context
        window = context_window(prompt.render(context.facts), state["messages"], state["turn"], max_context_tokens)
        rounds = sum(1 for m in state["turn"] if isinstance(m, AIMessage) and m.tool_calls)
        emit = context.emit

        def on_text(text: str) -> None:
            emit(agent_pb2.ChatEvent(token=agent_pb2.TokenDelta(text=text)))

        # Past the tool budget the model gets no tools, so it has to answer.
        answer = await chain.answer(
            window, with_tools=bool(tools.names) and rounds < max_tool_rounds, on_text=on_text, config=config
        )
        context.answers.append(answer)
        for call in answer.message.tool_calls:
            event = agent_pb2.ToolCall(
                id=call.get("id") or "", name=call["name"], arguments_json=json.dumps(call["args"])
            )
            emit(agent_pb2.ChatEvent(tool_call=event))
        return {"turn": [answer.message]}

    async def run_tools(state: ConversationState, runtime: Runtime[TurnContext]) -> dict:
        context = runtime.context
        last = state["turn"][-1]
        assert isinstance(last, AIMessage)
        # A round runs at most max_tool_calls_per_round calls; the rest are answered, not run,
        # so the model learns why and can ask again next round (every call needs an answer).
        allowed, refused = last.tool_calls[:max_tool_calls_per_round], last.tool_calls[max_tool_calls_per_round:]
        results: list[ToolMessage] = await asyncio.gather(*(tools.run(call) for call in allowed))
        results += [
            ToolMessage(
                content=f"Not run: at most {max_tool_calls_per_round} tool calls per round. "
                "Call it again in the next round if you still need it.",
                tool_call_id=call.get("id") or "",
                name=call["name"],
                status="error",
            )
            for call in refused
        ]
        for call, result in zip(last.tool_calls, results, strict=True):
            content = result.text
            event = agent_pb2.ToolResult(id=result.tool_call_id, name=call["name"], content=content)
            context.emit(agent_pb2.ChatEvent(tool_result=event))
            record = agent_pb2.ToolCall(
                id=call.get("id") or "", name=call["name"], arguments_json=json.dumps(call["args"])
            )
            context.tool_calls.append((record, content))
        return {"turn": results}

    builder = StateGraph(ConversationState, context_schema=TurnContext)
    builder.add_node("chat", chat)
    builder.add_node("tools", run_tools)
    builder.add_node("commit", _commit)
    builder.add_edge(START, "chat")
    builder.add_conditional_edges("chat", _route, ["tools", "commit"])
    builder.add_edge("tools", "chat")
    builder.add_edge("commit", END)
    return builder.compile(checkpointer=checkpointer, name="agentmesh-agent")


def recursion_limit(max_tool_rounds: int) -> int:
    # chat + tools per round, then the answering chat and the commit, plus one spare.
    return 2 * max_tool_rounds + 3
