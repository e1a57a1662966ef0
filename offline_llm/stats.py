"""Counters and scripted replies: the test and operations state behind `/_offline/*`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from offline_llm.faults import ANY_MODEL


@dataclass
class ServerStats:
    requests_by_endpoint: Counter[str] = field(default_factory=Counter)
    requests_by_model: Counter[str] = field(default_factory=Counter)
    faults_injected: Counter[str] = field(default_factory=Counter)
    streams_started: int = 0
    streams_completed: int = 0
    client_disconnects: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_by_endpoint": dict(self.requests_by_endpoint),
            "requests_by_model": dict(self.requests_by_model),
            "requests_total": sum(self.requests_by_endpoint.values()),
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "client_disconnects": self.client_disconnects,
            "faults_injected": dict(self.faults_injected),
            "faults_injected_total": sum(self.faults_injected.values()),
        }


@dataclass
class ScriptedReply:
    model: str
    reply: str
    count: int


class ScriptBook:
    """Exact texts the next plain answers of a model must be, for scripting a test scenario."""

    def __init__(self) -> None:
        self._scripts: list[ScriptedReply] = []

    def add(self, script: ScriptedReply) -> None:
        self._scripts.append(script)

    def clear(self) -> None:
        self._scripts.clear()

    def take(self, model: str) -> str | None:
        if not self._scripts:
            return None
        for wanted in (model, ANY_MODEL):
            for script in self._scripts:
                if script.model == wanted:
                    if script.count > 0:
                        script.count -= 1
                        if script.count == 0:
                            self._scripts.remove(script)
                    return script.reply
        return None
