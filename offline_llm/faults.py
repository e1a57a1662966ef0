"""Injected failures, per model name ("*" for every model).

Kinds: "429" (rate limited, with a `retry-after` header), "500" (server error), "stall" (sleep
`stall_s` seconds before the first byte, or after `after_tokens` streamed tokens, so the client times
out) and "invalid_json" (a structured-output answer that is not JSON, for testing a judge's retry).
`count` is how many requests the fault hits; -1 means until it is cleared.

Setting format for `OFFLINE_LLM_FAULTS`: rules separated by ";", each `MODEL=KIND` followed by
optional ":key=value" options, for example
`offline-small=429:retry_after=1:count=3;offline-large=500;*=stall:stall_s=5:after_tokens=2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

FaultKind = Literal["429", "500", "stall", "invalid_json"]
FAULT_KINDS: tuple[FaultKind, ...] = ("429", "500", "stall", "invalid_json")
ANY_MODEL = "*"


class FaultSpecError(ValueError):
    """A fault rule that cannot be understood."""


@dataclass
class Fault:
    model: str
    kind: FaultKind
    count: int = -1
    retry_after: float = 1.0
    stall_s: float = 30.0
    after_tokens: int = 0

    @classmethod
    def from_mapping(cls, spec: dict[str, Any]) -> Fault:
        kind = str(spec.get("kind", ""))
        if kind not in FAULT_KINDS:
            raise FaultSpecError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, not {kind!r}")
        try:
            fault = cls(
                model=str(spec.get("model") or ANY_MODEL),
                kind=cast(FaultKind, kind),
                count=int(spec.get("count", -1)),
                retry_after=float(spec.get("retry_after", 1.0)),
                stall_s=float(spec.get("stall_s", 30.0)),
                after_tokens=int(spec.get("after_tokens", 0)),
            )
        except (TypeError, ValueError) as error:
            raise FaultSpecError(f"invalid fault option: {error}") from error
        if fault.count == 0 or fault.count < -1 or fault.stall_s < 0 or fault.after_tokens < 0:
            raise FaultSpecError("count must be -1 or positive, stall_s and after_tokens not negative")
        return fault


def parse_fault_setting(text: str) -> list[Fault]:
    faults = []
    for rule in filter(None, (part.strip() for part in text.split(";"))):
        target, _, options = rule.partition("=")
        if not options:
            raise FaultSpecError(f"fault rule {rule!r} must look like MODEL=KIND[:key=value...]")
        kind, *pairs = options.split(":")
        spec: dict[str, Any] = {"model": target.strip(), "kind": kind.strip()}
        for pair in pairs:
            key, _, value = pair.partition("=")
            spec[key.strip()] = value.strip()
        faults.append(Fault.from_mapping(spec))
    return faults


class FaultBook:
    """The active faults; a matching fault is consumed once per request it hits."""

    def __init__(self, initial: list[Fault] | None = None) -> None:
        self._faults: list[Fault] = list(initial or [])

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def models(self) -> list[str]:
        return [f.model for f in self._faults if f.model != ANY_MODEL]

    def take(self, model: str, *, structured: bool) -> Fault | None:
        """The fault that hits this request, specific model before "*"; invalid_json only hits
        structured-output requests so it is not used up by plain chat turns."""
        if not self._faults:
            return None
        for wanted in (model, ANY_MODEL):
            for fault in self._faults:
                if fault.model != wanted or (fault.kind == "invalid_json" and not structured):
                    continue
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                return fault
        return None
