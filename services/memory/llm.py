"""Structured-output calls to the OpenAI-compatible chat endpoint.

Every call names its JSON schema (`strict`) and sends the task's input as a JSON document
in the last user message, after a system message with the real instructions, so a real
model and the offline one do the same job. Any failure (transport, status, malformed
JSON) is `Unavailable`: AddMemories then stores nothing rather than half a turn.
"""

from __future__ import annotations

import json
from typing import Any

import openai

from services.common.errors import Unavailable
from services.common.logging import get_logger
from services.memory.metrics import memory_llm_failures_total

log = get_logger(__name__)

JsonObject = dict[str, Any]


class StructuredLLM:
    def __init__(self, client: openai.AsyncOpenAI, model: str) -> None:
        self._client = client
        self._model = model

    async def complete(self, *, name: str, schema: JsonObject, instructions: str, document: JsonObject) -> JsonObject:
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=[
                    {"role": "system", "content": instructions},
                    {"role": "user", "content": json.dumps(document, ensure_ascii=False)},
                ],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": True},
                },
                temperature=0,
            )
            content = response.choices[0].message.content or ""
            answer = json.loads(content)
            if not isinstance(answer, dict):
                raise ValueError("the answer is not a JSON object")
        except (openai.OpenAIError, ValueError, IndexError) as exc:
            memory_llm_failures_total.labels(stage=name).inc()
            log.warning("memory_llm_call_failed", task=name, model=self._model, error=type(exc).__name__)
            raise Unavailable("the language model is unavailable", reason="LLM_UNAVAILABLE") from exc
        return answer

    def malformed(self, name: str) -> Unavailable:
        """For an answer that parsed but does not follow the schema: as bad as no answer."""
        memory_llm_failures_total.labels(stage=name).inc()
        log.warning("memory_llm_answer_malformed", task=name, model=self._model)
        return Unavailable("the language model gave a malformed answer", reason="LLM_UNAVAILABLE")
