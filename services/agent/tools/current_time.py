"""The current date and time, in UTC or an IANA timezone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

import llm_tasks
from services.agent.tools.base import Tool, ToolError


class CurrentTimeArgs(BaseModel):
    timezone: str | None = Field(default=None, description="IANA timezone such as Europe/Paris; UTC when omitted")


def current_time(timezone: str | None, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    if timezone:
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown timezone {timezone!r}; use an IANA name such as Europe/Paris") from None
        now = now.astimezone(zone)
        label = timezone
    else:
        label = "UTC"
    return f"{now:%A, %Y-%m-%d %H:%M:%S} ({label})"


async def _run(args: CurrentTimeArgs) -> str:
    return current_time(args.timezone)


CURRENT_TIME = Tool(
    name=llm_tasks.CURRENT_TIME,
    description="Returns the current date and time, optionally in an IANA timezone.",
    args_schema=CurrentTimeArgs,
    run=_run,
)
