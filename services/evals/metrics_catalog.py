"""The metrics the judge grades: one Markdown prompt per file, discovered at start.

A file is a small front matter block followed by the judge's instructions:

    ---
    description: One line shown by ListMetrics.
    direction: lower        # lower or higher is better
    threshold: 0.3          # the mean past which the CLI and the golden gate fail
    model: some-model       # optional: a judge model for this metric only
    ---
    Evaluate ...

The file stem is the metric's name, so adding a file adds a metric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.errors import InvalidArgument

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
FRONT_MATTER_RE = re.compile(r"\A---\s*\n(?P<meta>.*?)\n---\s*\n(?P<prompt>.*)\Z", re.DOTALL)


class MetricFileError(ValueError):
    """A metric file that cannot be used; names the file so start-up says which."""


class FrontMatter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1, max_length=300)
    direction: Literal["lower", "higher"]
    threshold: float = Field(ge=0, le=1)
    model: str = ""


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    description: str
    direction: Literal["lower", "higher"]
    threshold: float
    prompt: str
    model: str = ""

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "lower"

    def crosses_threshold(self, mean: float) -> bool:
        return mean > self.threshold if self.lower_is_better else mean < self.threshold

    def worse_first(self, score: float) -> float:
        """Sort key that puts the worst scores first, whichever way is better."""
        return -score if self.lower_is_better else score


def parse_metric_file(path: Path) -> MetricDefinition:
    name = path.stem
    if not NAME_RE.match(name):
        raise MetricFileError(f"{path}: metric names are lower-case letters, digits, '_' or '-'")
    match = FRONT_MATTER_RE.match(path.read_text(encoding="utf-8"))
    if match is None:
        raise MetricFileError(f"{path}: must start with a '---' front matter block")
    try:
        meta = FrontMatter.model_validate(yaml.safe_load(match["meta"]) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise MetricFileError(f"{path}: invalid front matter: {exc}") from None
    prompt = match["prompt"].strip()
    if not prompt:
        raise MetricFileError(f"{path}: the prompt after the front matter is empty")
    return MetricDefinition(name, meta.description, meta.direction, meta.threshold, prompt, meta.model)


class MetricCatalog:
    def __init__(self, metrics: list[MetricDefinition]) -> None:
        self._metrics = {m.name: m for m in sorted(metrics, key=lambda m: m.name)}

    @classmethod
    def load(cls, directory: Path) -> MetricCatalog:
        if not directory.is_dir():
            raise MetricFileError(f"metrics directory {directory} does not exist")
        metrics = [parse_metric_file(path) for path in sorted(directory.glob("*.md"))]
        if not metrics:
            raise MetricFileError(f"metrics directory {directory} has no .md metric files")
        return cls(metrics)

    def __iter__(self):
        return iter(self._metrics.values())

    def __len__(self) -> int:
        return len(self._metrics)

    def get(self, name: str) -> MetricDefinition:
        metric = self._metrics.get(name)
        if metric is None:
            raise InvalidArgument(
                f"unknown metric {name!r}; known: {', '.join(self._metrics)}", reason="METRIC_UNKNOWN"
            )
        return metric

    def select(self, names: list[str]) -> list[MetricDefinition]:
        """The named metrics (all when none are named), each once."""
        if not names:
            return list(self._metrics.values())
        return [self.get(name) for name in dict.fromkeys(names)]
