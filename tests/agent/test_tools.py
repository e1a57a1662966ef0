"""The tools and the context window, as plain functions: no process needed."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from services.agent.context_window import context_window, tool_pairs_intact
from services.agent.tools.base import ToolError
from services.agent.tools.calculator import calculate
from services.agent.tools.registry import build_tools


@pytest.mark.parametrize(
    ("expression", "result"),
    [("12*(3+4)", "84"), ("2^10", "1024"), ("7/2", "3.5"), ("10//3", "3"), ("-2**2", "-4"), ("10 % 4", "2")],
)
def test_calculator_evaluates_arithmetic(expression: str, result: str) -> None:
    assert calculate(expression) == result


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os').system('true')", "only numbers"),
        ("(lambda: 1)()", "only numbers"),
        ("9**9**9", "exponents are limited"),
        ("(10**999)*(10**999)*(10**999)*(10**999)", "too large"),
        ("1/0", "division by zero"),
        ("1 +", "not an arithmetic expression"),
        ("1" * 201, "limited to 200 characters"),
    ],
)
def test_calculator_refuses_code_and_runaway_sizes(expression: str, reason: str) -> None:
    with pytest.raises(ToolError, match=reason):
        calculate(expression)


async def test_failing_tool_answers_with_its_error_instead_of_raising() -> None:
    tools = build_tools(web_search_enabled=True, web_search_max_results=3, web_search_timeout_s=2)

    bad_zone = await tools.run({"name": "current_time", "args": {"timezone": "Mars/Olympus"}, "id": "c1"})
    missing = await tools.run({"name": "calculator", "args": {}, "id": "c2"})
    offline = await tools.run({"name": "web_search", "args": {"query": "agentmesh"}, "id": "c3"})
    unknown = await tools.run({"name": "rm_rf", "args": {}, "id": "c4"})

    assert bad_zone.status == "error" and "unknown timezone" in bad_zone.text
    assert missing.status == "error" and "expression" in missing.text
    assert offline.status == "error" and "web search is unavailable" in offline.text
    assert unknown.status == "error" and "no tool named 'rm_rf'" in unknown.text
    assert [m.tool_call_id for m in (bad_zone, missing, offline, unknown)] == ["c1", "c2", "c3", "c4"]


def test_web_search_is_offered_only_when_enabled() -> None:
    off = build_tools(web_search_enabled=False, web_search_max_results=3, web_search_timeout_s=2).names
    on = build_tools(web_search_enabled=True, web_search_max_results=3, web_search_timeout_s=2).names
    assert "web_search" not in off and "web_search" in on
    assert {"calculator", "current_time", "ask_user"} <= set(off)


def _exchange(index: int) -> list:
    call = {"name": "calculator", "args": {"expression": "1+1"}, "id": f"call-{index}"}
    return [
        HumanMessage(f"question {index} " * 30),
        AIMessage("", tool_calls=[call]),
        ToolMessage("2", tool_call_id=f"call-{index}"),
        AIMessage(f"answer {index} " * 30),
    ]


def test_context_window_keeps_system_and_turn_and_starts_on_a_user_message() -> None:
    history = [message for index in range(40) for message in _exchange(index)]
    turn = [HumanMessage("now")]

    window = context_window("system prompt", history, turn, max_tokens=600)

    assert window[0].type == "system" and window[0].content == "system prompt"
    assert window[1].type == "human"
    assert window[-1] == turn[0]
    assert 2 < len(window) < len(history)
    assert tool_pairs_intact(window[1:])


def test_context_window_keeps_an_oversized_turn_whole() -> None:
    turn = [HumanMessage("x" * 5000)]

    window = context_window("system prompt", _exchange(0), turn, max_tokens=300)

    assert [m.type for m in window] == ["system", "human"]
    assert window[1].content == "x" * 5000


def test_tool_pairs_check_finds_a_result_without_its_call() -> None:
    exchange = _exchange(0)

    assert tool_pairs_intact(exchange)
    assert not tool_pairs_intact([exchange[0], exchange[2], exchange[3]])
    assert not tool_pairs_intact([exchange[0], exchange[1], exchange[3]])
