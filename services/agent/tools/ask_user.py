"""`ask_user`: the model asks the user a question and the run waits for the answer.

It has no body of its own: the graph never runs it as a tool. The call pauses the run
(an interrupt of kind QUESTION) and the user's answer becomes the tool's result.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

import llm_tasks
from services.agent.tools.base import Tool, ToolError

ASK_USER = llm_tasks.ASK_USER


class AskUserArgs(BaseModel):
    question: str = Field(description="The question to ask the user", min_length=1, max_length=1000)


async def _never_run(args: AskUserArgs) -> str:
    raise ToolError("ask_user is answered by the user, not run")


ASK_USER_TOOL = Tool(
    name=ASK_USER,
    description=(
        "Asks the user a question and waits for the answer. Use it when you need information "
        "only the user has before you can answer."
    ),
    args_schema=AskUserArgs,
    run=_never_run,
)
