"""The offline model knows every task the services give it, named in one place (llm_tasks):
a tool registered by the agent, a metric file of the evals service or a structured-output
schema it does not know fails here, not as a silently neutral answer in a golden run."""

from __future__ import annotations

import ast
from pathlib import Path

import llm_tasks
from offline_llm.answers import TOOL_ARGUMENTS
from offline_llm.judge import JUDGES, judge
from offline_llm.structured import NAMED_TASKS
from services.agent.tools.registry import build_tools
from services.evals.settings import PACKAGE_DIR as EVALS_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_every_tool_the_agent_can_register_is_known_to_the_offline_model() -> None:
    registered = set(build_tools(web_search_enabled=True, web_search_max_results=3, web_search_timeout_s=1).names)
    assert registered <= llm_tasks.TOOLS, f"unknown to llm_tasks.TOOLS: {registered - llm_tasks.TOOLS}"
    assert set(TOOL_ARGUMENTS) == llm_tasks.TOOLS


def test_every_metric_file_is_known_to_the_offline_judge() -> None:
    files = {path.stem for path in (EVALS_DIR / "metrics").glob("*.md")}
    assert files, "no metric files found"
    assert files <= llm_tasks.METRICS, f"metric files unknown to llm_tasks.METRICS: {files - llm_tasks.METRICS}"
    assert set(JUDGES) == llm_tasks.METRICS
    for name in files:
        assert "unknown" not in judge(name, "What is 2+2?", "It is 4.").reasoning


def test_every_schema_name_has_an_offline_task() -> None:
    assert set(NAMED_TASKS) == llm_tasks.SCHEMAS


def test_an_unknown_metric_is_scored_by_the_overlap_rule_not_a_constant() -> None:
    on_topic = judge("politeness", "Tell me about rose gardens", "Rose gardens need sun.")
    off_topic = judge("politeness", "Tell me about rose gardens", "Bananas are yellow.")
    assert on_topic.score > off_topic.score == 0.0
    assert judge("politeness", "Hi", "").score == 0.0
    assert "unknown" in on_topic.reasoning and "overlap" in on_topic.reasoning


def test_offline_llm_imports_no_service_module() -> None:
    """The offline model is a test double of the model, not of the mesh: it depends on llm_tasks only."""
    for path in [*sorted((ROOT / "offline_llm").rglob("*.py")), ROOT / "llm_tasks" / "__init__.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "services" or n.startswith("services.") for n in names), f"{path} imports {names}"
