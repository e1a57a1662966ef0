"""Structured output (`response_format`): the three named tasks and a JSON-schema filler.

Named tasks are chosen by `response_format.json_schema.name`; the caller puts a JSON document as the
content of the last user message:

- `memory_facts`: in `{"messages": [{"role", "content"}, ...]}`, out `{"facts": ["Lives in Berlin", ...]}`
  (see `offline_llm.facts` for the statements understood and the "NOT: " retractions).
- `memory_resolution`: in `{"candidate": "<fact>", "existing": [{"id", "text"}, ...]}`, out
  `{"action": "ADD"|"UPDATE"|"DELETE"|"NOOP", "target_id": "<id or empty>", "text": "<final text>"}`.
- `judgement`: in `{"metric", "input", "output"}`, out `{"score": 0..1, "reasoning": "..."}`
  (see `offline_llm.judge` for the heuristics).
- `conversation_summary`: in `{"summary": "<the summary so far>", "messages": [{"role", "content"}, ...]}`,
  out `{"summary": "* fact\n* fact..."}`: the bullets of the summary so far followed by the facts the
  user states in the messages (as `memory_facts` extracts them), each once; so a fact from the first
  turn survives any number of summaries.

`{"type": "json_object"}` carries no name, so the task is recognised from the input's keys, and
anything else becomes `{"answer": "<plain answer>"}`. Any other named schema gets the smallest object
valid against it, so structured output never fails against the offline model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import llm_tasks
from offline_llm.facts import ExistingFact, extract_user_facts, resolve_fact
from offline_llm.judge import judge
from offline_llm.text import message_text

JsonObject = dict[str, Any]


def memory_facts(document: JsonObject) -> JsonObject:
    messages = document.get("messages")
    if not isinstance(messages, list):
        messages = [{"role": "user", "content": str(document.get("text", ""))}]
    turns = [{"role": m.get("role"), "content": message_text(m)} for m in messages if isinstance(m, dict)]
    return {"facts": extract_user_facts(turns)}


def memory_resolution(document: JsonObject) -> JsonObject:
    existing = [
        ExistingFact(str(item.get("id", "")), str(item.get("text", "")))
        for item in document.get("existing") or []
        if isinstance(item, dict)
    ]
    outcome = resolve_fact(str(document.get("candidate", "")), existing)
    return {"action": outcome.action, "target_id": outcome.target_id, "text": outcome.text}


def judgement(document: JsonObject) -> JsonObject:
    result = judge(str(document.get("metric", "")), str(document.get("input", "")), str(document.get("output", "")))
    return {"score": result.score, "reasoning": result.reasoning}


def conversation_summary(document: JsonObject) -> JsonObject:
    bullets = [line.strip() for line in str(document.get("summary", "")).splitlines() if line.strip()]
    messages = document.get("messages") if isinstance(document.get("messages"), list) else []
    turns = [{"role": m.get("role"), "content": message_text(m)} for m in messages if isinstance(m, dict)]
    for fact in extract_user_facts(turns):
        bullet = f"* {fact}"
        if bullet not in bullets:
            bullets.append(bullet)
    return {"summary": "\n".join(bullets)}


# Keyed by the schema names of `llm_tasks.SCHEMAS`, shared with the services.
NAMED_TASKS: dict[str, Callable[[JsonObject], JsonObject]] = {
    llm_tasks.CONVERSATION_SUMMARY: conversation_summary,
    llm_tasks.MEMORY_FACTS: memory_facts,
    llm_tasks.MEMORY_RESOLUTION: memory_resolution,
    llm_tasks.JUDGEMENT: judgement,
}
_TASK_KEYS = (
    ({"candidate", "existing"}, llm_tasks.MEMORY_RESOLUTION),
    ({"metric", "output"}, llm_tasks.JUDGEMENT),
    ({"messages"}, llm_tasks.MEMORY_FACTS),
)


def _resolve_ref(schema: JsonObject, root: JsonObject) -> JsonObject:
    seen = 0
    while "$ref" in schema and seen < 32:
        node: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema = node if isinstance(node, dict) else {}
        seen += 1
    return schema


def minimal_value(schema: JsonObject, root: JsonObject | None = None) -> Any:
    """The smallest value valid against `schema`: required properties only, first enum, minimums."""
    root = schema if root is None else root
    schema = _resolve_ref(schema, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf"):
        options = [_resolve_ref(o, root) for o in schema.get(combinator, []) if isinstance(o, dict)]
        if options:
            preferred = [o for o in options if o.get("type") != "null"] or options
            return minimal_value(preferred[0], root)
    if schema.get("allOf"):
        merged: JsonObject = {}
        for part in schema["allOf"]:
            resolved = _resolve_ref(part, root)
            for key, value in resolved.items():
                if key in ("properties",) and key in merged:
                    merged[key] = {**merged[key], **value}
                elif key == "required" and key in merged:
                    merged[key] = [*merged[key], *value]
                else:
                    merged[key] = value
        return minimal_value(merged, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: minimal_value(properties.get(name, {}), root) for name in schema.get("required", [])}
    if kind == "array":
        item = schema.get("items", {})
        return [minimal_value(item, root) for _ in range(int(schema.get("minItems", 0)))]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = max(0, low) if "maximum" not in schema else min(max(0, low), schema["maximum"])
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            value = schema["exclusiveMinimum"] + 1
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if schema.get("format") == "date-time":
        return "1970-01-01T00:00:00Z"
    return "x" * int(schema.get("minLength", 0))


def conform(value: Any, schema: JsonObject, root: JsonObject | None = None) -> Any:
    """`value` made to fit `schema`: missing required properties filled, undeclared ones dropped when
    the schema forbids extras, so a caller's slightly different schema still validates."""
    root = schema if root is None else root
    schema = _resolve_ref(schema, root)
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    properties: JsonObject = schema.get("properties", {})
    result = {
        key: conform(item, properties.get(key, {}), root)
        for key, item in value.items()
        if key in properties or schema.get("additionalProperties", True) is not False
    }
    for name in schema.get("required", []):
        if name not in result:
            result[name] = minimal_value(properties.get(name, {}), root)
    return result


def _last_user_document(messages: list[JsonObject]) -> JsonObject | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            try:
                document = json.loads(message_text(message))
            except ValueError:
                return None
            return document if isinstance(document, dict) else None
    return None


def structured_answer(response_format: JsonObject, messages: list[JsonObject], plain_answer: Callable[[], str]) -> str:
    """The JSON text of the assistant message for a request with `response_format`."""
    document = _last_user_document(messages)
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") or {}
        task = NAMED_TASKS.get(str(spec.get("name", "")))
        if task is not None:
            if document is None and spec.get("name") == llm_tasks.MEMORY_FACTS:
                document = {"messages": [m for m in messages if m.get("role") == "user"][-1:]}
            result = conform(task(document or {}), schema) if schema else task(document or {})
            return json.dumps(result)
        return json.dumps(minimal_value(schema))
    if document is not None:
        for keys, name in _TASK_KEYS:
            if keys <= document.keys():
                return json.dumps(NAMED_TASKS[name](document))
    return json.dumps({"answer": plain_answer()})
