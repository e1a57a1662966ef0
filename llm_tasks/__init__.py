"""The tasks the mesh asks a model to do, named once for the services and the offline model.

The offline model (`offline_llm`) must answer every one of them without a real model, and it is
a test double that must not import the services it stands in for (nor their database, gRPC and
LangChain dependencies). So the names live here, in a package with no imports at all, that
both `services.*` and `offline_llm` depend on; tests/offline_llm/test_task_names.py fails when a
tool the agent registers or a metric file of the evals service is unknown to the offline model.

Where to change what:
- a structured-output task (a `response_format` json_schema name): add it to SCHEMAS and a
  handler to offline_llm/structured.py NAMED_TASKS;
- a tool: add it to TOOLS, and teach offline_llm/answers.py when to call it;
- a metric (a services/evals/metrics/*.md file): add it to METRICS and a heuristic to
  offline_llm/judge.py (a metric missing there is judged by its documented generic rule).
"""

from __future__ import annotations

# Structured-output schema names (`response_format.json_schema.name`).
MEMORY_FACTS = "memory_facts"
MEMORY_RESOLUTION = "memory_resolution"
JUDGEMENT = "judgement"
CONVERSATION_SUMMARY = "conversation_summary"
SCHEMAS: frozenset[str] = frozenset({MEMORY_FACTS, MEMORY_RESOLUTION, JUDGEMENT, CONVERSATION_SUMMARY})

# Tools the agent may offer the model.
CALCULATOR = "calculator"
CURRENT_TIME = "current_time"
WEB_SEARCH = "web_search"
ASK_USER = "ask_user"
TOOLS: frozenset[str] = frozenset({CALCULATOR, CURRENT_TIME, WEB_SEARCH, ASK_USER})

# Metrics the evals service grades (the stems of services/evals/metrics/*.md).
TOXICITY = "toxicity"
RELEVANCY = "relevancy"
HALLUCINATION = "hallucination"
HELPFULNESS = "helpfulness"
CONCISENESS = "conciseness"
METRICS: frozenset[str] = frozenset({TOXICITY, RELEVANCY, HALLUCINATION, HELPFULNESS, CONCISENESS})
