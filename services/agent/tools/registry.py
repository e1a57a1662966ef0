"""The tools offered to the model, and running one call into a tool message.

A tool that fails answers with its error (status "error"): the model reads it and
explains, the turn goes on.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import ToolCall, ToolMessage
from pydantic import ValidationError

from runtime.logging import get_logger
from services.agent import metrics
from services.agent.tools.ask_user import ASK_USER_TOOL
from services.agent.tools.base import Tool, ToolError
from services.agent.tools.calculator import CALCULATOR
from services.agent.tools.current_time import CURRENT_TIME
from services.agent.tools.web_search import make_web_search

log = get_logger(__name__)


class ToolRegistry:
    def __init__(self, tools: list[Tool]) -> None:
        self._tools = {tool.name: tool for tool in tools}

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def openai_schemas(self) -> list[dict[str, Any]]:
        return [tool.openai_schema() for tool in self._tools.values()]

    async def run(self, call: ToolCall) -> ToolMessage:
        name, call_id = call["name"], call.get("id") or ""
        tool = self._tools.get(name)
        try:
            if tool is None:
                raise ToolError(f"there is no tool named {name!r}; available: {', '.join(self._tools)}")
            content = await tool.run(tool.args_schema.model_validate(call.get("args") or {}))
        except ValidationError as exc:
            return self._failed(name, call_id, f"invalid arguments {json.dumps(call.get('args'))}: {_first_error(exc)}")
        except ToolError as exc:
            return self._failed(name, call_id, str(exc))
        except Exception as exc:
            log.warning("tool_crashed", tool=name, error=repr(exc))
            return self._failed(name, call_id, f"the tool failed unexpectedly ({type(exc).__name__})")
        metrics.tool_calls_total.labels(tool=name, outcome="ok").inc()
        return ToolMessage(content=content, tool_call_id=call_id, name=name)

    def _failed(self, name: str, call_id: str, reason: str) -> ToolMessage:
        metrics.tool_calls_total.labels(tool=name, outcome="error").inc()
        return ToolMessage(content=f"Error: {reason}", tool_call_id=call_id, name=name, status="error")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def build_tools(*, web_search_enabled: bool, web_search_max_results: int, web_search_timeout_s: float) -> ToolRegistry:
    tools = [CALCULATOR, CURRENT_TIME, ASK_USER_TOOL]
    if web_search_enabled:
        tools.append(make_web_search(max_results=web_search_max_results, timeout_s=web_search_timeout_s))
    return ToolRegistry(tools)
