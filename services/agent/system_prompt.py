"""The system prompt: a Markdown asset (`prompts/system.md`) filled in per turn."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

PROMPT_PATH = Path(__file__).parent / "prompts" / "system.md"
NO_MEMORY = "Nothing yet."
SUMMARY_HEADING = "Summary of the earlier conversation"


class SystemPrompt:
    def __init__(self, agent_name: str, path: Path = PROMPT_PATH) -> None:
        # Read once at start: the file never changes under a running process.
        self._template = path.read_text(encoding="utf-8")
        self._agent_name = agent_name

    def render(self, facts: list[str], now: datetime | None = None, summary: str = "") -> str:
        # One fact per bullet line, newlines flattened so a fact cannot open a new section.
        memory = "\n".join(f"* {' '.join(fact.split())}" for fact in facts) if facts else NO_MEMORY
        now = now or datetime.now(UTC)
        rendered = self._template.format(
            agent_name=self._agent_name,
            long_term_memory=memory,
            current_date_and_time=f"{now:%Y-%m-%d %H:%M:%S %Z}",
        )
        if summary:
            # Turns compacted away (CONTEXT_STRATEGY=summarize) reach the model only this way.
            rendered += f"\n\n# {SUMMARY_HEADING}\n{summary}\n"
        return rendered
