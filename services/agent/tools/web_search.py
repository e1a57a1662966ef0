"""Web search through DuckDuckGo (`ddgs`), off unless WEB_SEARCH_ENABLED is set.

`ddgs` is synchronous, so it runs in a worker thread under a deadline; any failure
(no network, rate limit, timeout) becomes a tool error the model can explain.
"""

from __future__ import annotations

import asyncio
import json

from pydantic import BaseModel, Field

import llm_tasks
from services.agent.tools.base import Tool, ToolError


class WebSearchArgs(BaseModel):
    query: str = Field(description="What to search the web for", min_length=1, max_length=400)


def _search(query: str, max_results: int, timeout_s: float) -> list[dict[str, str]]:
    from ddgs import DDGS  # heavy import, paid only when the tool is enabled and used

    return DDGS(timeout=max(1, int(timeout_s))).text(query, max_results=max_results)


def make_web_search(*, max_results: int, timeout_s: float) -> Tool:
    async def run(args: WebSearchArgs) -> str:
        try:
            async with asyncio.timeout(timeout_s):
                hits = await asyncio.to_thread(_search, args.query, max_results, timeout_s)
        except TimeoutError:
            raise ToolError("web search is unavailable: it did not answer in time") from None
        except Exception as exc:
            raise ToolError(f"web search is unavailable: {type(exc).__name__}: {exc}") from None
        results = [{"title": h.get("title", ""), "url": h.get("href", ""), "body": h.get("body", "")} for h in hits]
        return json.dumps({"results": results}, ensure_ascii=False)

    return Tool(
        name=llm_tasks.WEB_SEARCH,
        description="Searches the web and returns the top results (title, url, snippet).",
        args_schema=WebSearchArgs,
        run=run,
    )
