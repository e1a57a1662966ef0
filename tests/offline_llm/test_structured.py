"""Structured output: the three named tasks and the schema filler, through the openai SDK and ChatOpenAI."""

from __future__ import annotations

import json
from typing import Any

import httpx
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import BaseModel

FACTS_SCHEMA = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
    "required": ["facts"],
    "additionalProperties": False,
}
RESOLUTION_SCHEMA = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["ADD", "UPDATE", "DELETE", "NOOP"]},
        "target_id": {"type": "string"},
        "text": {"type": "string"},
    },
    "required": ["action", "target_id", "text"],
    "additionalProperties": False,
}


async def run_task(client: AsyncOpenAI, name: str, schema: dict[str, Any], document: dict[str, Any]) -> Any:
    response = await client.chat.completions.create(
        model="offline-small",
        messages=[
            {"role": "system", "content": f"Do the {name} task."},
            {"role": "user", "content": json.dumps(document)},
        ],
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}},
    )
    return json.loads(response.choices[0].message.content or "")


async def test_memory_facts_come_only_from_user_statements(openai_client: AsyncOpenAI) -> None:
    document = {
        "messages": [
            {"role": "user", "content": "Hi! My name is Ana and I love hiking. I live in Berlin."},
            {"role": "assistant", "content": "I love chess and I live in Paris."},
            {"role": "user", "content": "What is the weather like today?"},
            {"role": "user", "content": "I no longer like coffee. My favourite colour is green."},
        ]
    }

    result = await run_task(openai_client, "memory_facts", FACTS_SCHEMA, document)

    assert result == {
        "facts": ["Name is Ana", "Loves hiking", "Lives in Berlin", "NOT: Likes coffee", "Favourite colour is green"]
    }


async def test_moving_city_resolves_to_an_update_of_the_old_fact(openai_client: AsyncOpenAI) -> None:
    first = await run_task(
        openai_client, "memory_facts", FACTS_SCHEMA, {"messages": [{"role": "user", "content": "I live in Paris"}]}
    )
    second = await run_task(
        openai_client, "memory_facts", FACTS_SCHEMA, {"messages": [{"role": "user", "content": "I moved to Berlin"}]}
    )
    existing = [{"id": "m-1", "text": first["facts"][0]}, {"id": "m-2", "text": "Loves hiking"}]

    resolution = await run_task(
        openai_client,
        "memory_resolution",
        RESOLUTION_SCHEMA,
        {"candidate": second["facts"][0], "existing": existing},
    )

    assert first["facts"] == ["Lives in Paris"]
    assert resolution == {"action": "UPDATE", "target_id": "m-1", "text": "Lives in Berlin"}


async def test_memory_resolution_add_noop_and_delete(openai_client: AsyncOpenAI) -> None:
    existing = [{"id": "a", "text": "Loves hiking"}, {"id": "b", "text": "Name is Ana"}]

    async def resolve(candidate: str) -> Any:
        return await run_task(
            openai_client, "memory_resolution", RESOLUTION_SCHEMA, {"candidate": candidate, "existing": existing}
        )

    assert await resolve("loves hiking.") == {"action": "NOOP", "target_id": "a", "text": "Loves hiking"}
    assert await resolve("Works at Acme") == {"action": "ADD", "target_id": "", "text": "Works at Acme"}
    assert await resolve("NOT: Likes hiking") == {"action": "DELETE", "target_id": "a", "text": "Loves hiking"}
    assert await resolve("NOT: Lives in Rome") == {"action": "NOOP", "target_id": "", "text": ""}
    assert (await resolve("Name is Anna"))["action"] == "UPDATE"


class Judgement(BaseModel):
    score: float
    reasoning: str


async def test_judgement_scores_toxicity_and_relevancy_with_chatopenai(
    base_url: str, control: httpx.AsyncClient
) -> None:
    judge = ChatOpenAI(
        model="offline-large", base_url=base_url, api_key="offline", max_retries=0, timeout=10
    ).with_structured_output(Judgement.model_json_schema() | {"title": "judgement"}, method="json_schema")

    async def score(metric: str, question: str, answer: str) -> dict[str, Any]:
        payload = {"metric": metric, "input": question, "output": answer}
        result = await judge.ainvoke([HumanMessage(json.dumps(payload))])
        assert isinstance(result, dict)
        return result

    toxic = await score("toxicity", "How are you?", "Shut up, you idiot.")
    clean = await score("toxicity", "How are you?", "I am well, thank you for asking.")
    relevant = await score("relevancy", "What is the capital of France?", "The capital of France is Paris.")
    off_topic = await score("relevancy", "What is the capital of France?", "Bananas are yellow.")
    offline = await score(
        "hallucination",
        "What is the capital of France?",
        'You asked: "what is the capital of France". I am the agentmesh offline model, so I cannot look this up.',
    )
    unknown = await score("creativity", "Write a poem", "Roses are red.")
    unknown_on_topic = await score("creativity", "Write a poem about roses", "A poem: roses are red.")

    assert toxic["score"] >= 0.7 and clean["score"] == 0.0
    assert relevant["score"] > 0.6 > off_topic["score"]
    assert offline["score"] < 0.3
    # An unknown metric is scored by the documented overlap rule (offline_llm/judge.py), not 0.5.
    assert unknown["score"] == 0.0 and "unknown" in unknown["reasoning"]
    assert unknown_on_topic["score"] > 0.5 and "overlap" in unknown_on_topic["reasoning"]


async def test_other_schemas_get_a_minimal_valid_object(openai_client: AsyncOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["good", "bad"]},
            "count": {"type": "integer", "minimum": 2},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "detail": {"$ref": "#/$defs/Detail"},
            "optional": {"type": "string"},
        },
        "required": ["label", "count", "tags", "detail"],
        "$defs": {"Detail": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}},
    }

    result = await run_task(openai_client, "something_else", schema, {"question": "anything"})

    assert result == {"label": "good", "count": 2, "tags": [""], "detail": {"ok": False}}


async def test_json_object_mode_recognises_a_task_by_its_keys(openai_client: AsyncOpenAI) -> None:
    response = await openai_client.chat.completions.create(
        model="offline-small",
        messages=[{"role": "user", "content": json.dumps({"metric": "conciseness", "input": "hi", "output": "hello"})}],
        response_format={"type": "json_object"},
    )

    assert json.loads(response.choices[0].message.content or "") == {
        "score": 1.0,
        "reasoning": "The answer is 1 word long, within 60 words.",
    }
