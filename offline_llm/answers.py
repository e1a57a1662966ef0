"""Plain chat answers and tool decisions of the offline model.

Tool calls, when the tool is offered and `tool_choice` is not "none":
- `calculator` with `{"expression": "12*(3+4)"}` when the last user message contains an arithmetic
  expression ("what is 12*(3+4)?", "calculate 2^10", "what is 5 plus 3") or asks to compute or
  calculate something;
- `current_time` with `{}` when it asks for the time or the date;
- `web_search` with `{"query": "X"}` for "search the web for X", "look up X online", "google X".
- `ask_user` with `{"question": "What is X?"}` when the user asks to be asked something first:
  "ask me X first" / "ask me about X first" / "ask me a question first" (then the question is
  "What should I know before I answer?"); checked before the other tools, so "ask me my age
  first, then what is 2+2" asks first.
Several calculations separated by ";" ("what is 1+1; 2+2; 3+3?") are parallel calls, one
`calculator` call per expression in one reply, as models with parallel tool calls do.
A forced `tool_choice` calls the named tool, with the arguments above when they apply and otherwise
the smallest arguments valid against the tool's parameter schema.

After a tool result the answer states it ("The result is 84.", "It is <time>.", a short summary of
the search results, the user's answer to an `ask_user` question, "You rejected the X call, so I
did not run it." when the result says the user rejected the call, or the tool's error). Otherwise
the answer comes from what the user said in the conversation and from the system prompt's "# What
you know about the user" bullet list, and falls back to restating the question while saying it
comes from the offline model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import llm_tasks
from offline_llm.facts import apply_facts, extract_facts, second_person
from offline_llm.judge import OFFENSIVE_TERMS
from offline_llm.structured import minimal_value
from offline_llm.text import content_words, message_text

OFFLINE_NOTE = "I am the agentmesh offline model, so I only know what you tell me and what my tools return."


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    text: str | None = None
    tool_call: ToolCall | None = None
    # Parallel calls after `tool_call`, in the same reply.
    more_calls: tuple[ToolCall, ...] = ()


_WORD_OPERATORS = (
    (re.compile(r"\s+(?:plus|added to)\s+", re.I), " + "),
    (re.compile(r"\s+minus\s+", re.I), " - "),
    (re.compile(r"\s+(?:times|multiplied by|x)\s+", re.I), " * "),
    (re.compile(r"\s+(?:divided by|over)\s+", re.I), " / "),
    (re.compile(r"\s+(?:to the power of|raised to)\s+", re.I), " ^ "),
)
_EXPRESSION_RE = re.compile(r"[-\d(][\d\s.+\-*/^%()]*[\d)]")
_OPERATOR_RE = re.compile(r"\d\s*\)?\s*[-+*/^%]\s*\(?\s*-?\d")
_COMPUTE_RE = re.compile(r"\b(?:calculate|compute|evaluate|work out|solve)\b\s*(?P<rest>.*)", re.I)
_TIME_RE = re.compile(
    r"\b(?:what time|the time|current time|time is it|time now|today's date|what date|the date|what day|"
    r"date today)\b",
    re.I,
)
_SEARCH_RES = (
    re.compile(r"\bsearch (?:the web|the internet|online|the net)(?: for| about)?\s+(?P<q>.+)", re.I),
    re.compile(r"\blook up\s+(?P<q>.+?)\s+(?:online|on the web|on the internet)\b", re.I),
    re.compile(r"\b(?:google|web search(?: for)?|search for|look up)\s+(?P<q>.+)", re.I),
)
_ASK_FIRST_RE = re.compile(r"\bask me (?:for |about )?(?P<what>.+?) first\b", re.I)
_REJECTED_RE = re.compile(r"\buser rejected\b", re.I)
_TOXIC_RE = re.compile(r"\b(?:" + "|".join(re.escape(t) for t in OFFENSIVE_TERMS) + r")\b", re.I)
_ERROR_RE = re.compile(r"^\s*(?:error|exception|failed|traceback)\b|\"error\"\s*:", re.I)

# The agent's system prompt: long-term memory, and the summary of turns compacted away.
_KNOWN_ABOUT_USER_HEADING = re.compile(
    r"^#\s+(?:What you know about the user|Summary of the earlier conversation)\s*$", re.I | re.M
)
_BULLET_RE = re.compile(r"^\s*[*-]\s+(?P<fact>.+?)\s*$")

_TOPICS: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (re.compile(question, re.I), re.compile(fact, re.I))
    for question, fact in (
        (r"\bmy name\b|\bwho am i\b|\bcall me\b", r"^name is "),
        (
            r"\bwhere (?:do|did) i (?:live|move)|\bwhere i live\b|\bmy (?:home|city|town|address)\b",
            r"^(?:lives in|is from) ",
        ),
        (r"\bwhere (?:am i|do i come) from\b", r"^(?:is from|lives in) "),
        (
            r"\bwhere do i work\b|\bmy (?:job|work|employer|company)\b|\bwhat do i do for\b",
            r"^(?:works at|works as|is an?) ",
        ),
        (
            r"\bwhat do i (?:like|love|enjoy|prefer)\b|\bwhat i (?:like|love|enjoy)\b|\bmy (?:hobb|interest|prefer)",
            r"^(?:loves|likes|enjoys|prefers|favou?rite) ",
        ),
        (r"\bwhat do i (?:hate|dislike)\b|\bwhat i (?:hate|dislike)\b", r"^(?:hates|dislikes) "),
        (r"\ballerg", r"^is allergic to "),
        (r"\bhow old am i\b|\bmy age\b", r"^is \d+ years? old"),
    )
)
_EVERYTHING_RE = re.compile(
    r"\babout me\b|\bwhat do you (?:know|remember)\b|\bwhat did i (?:tell|say)\b|\bwhat have i (?:told|said)\b",
    re.I,
)
_GREETING_RE = re.compile(r"^\s*(?:hi|hello|hey|good (?:morning|afternoon|evening))\b[\s!.,]*(?:there)?[\s!.]*$", re.I)


def find_expression(text: str) -> str | None:
    """The arithmetic expression a message asks about, with number words turned into operators."""
    normalised = text
    for pattern, symbol in _WORD_OPERATORS:
        normalised = pattern.sub(symbol, normalised)
    candidates = [m.group().strip() for m in _EXPRESSION_RE.finditer(normalised)]
    candidates = [c for c in candidates if _OPERATOR_RE.search(c)]
    if candidates:
        return max(candidates, key=len)
    compute = _COMPUTE_RE.search(normalised)
    if compute and compute.group("rest").strip(" ?.!"):
        return compute.group("rest").strip(" ?.!")
    return None


def _search_query(text: str) -> str | None:
    for pattern in _SEARCH_RES:
        match = pattern.search(text)
        if match:
            query = match.group("q").strip(" ?.!\"'")
            if query:
                return query
    return None


def _question_first(text: str) -> str | None:
    match = _ASK_FIRST_RE.search(text)
    if not match:
        return None
    what = match.group("what").strip(" ?.!")
    if not what or re.fullmatch(r"(?:a|one|some) questions?", what, re.I):
        return "What should I know before I answer?"
    what = re.sub(r"\bmy\b", "your", re.sub(r"\bme\b", "you", what, flags=re.I), flags=re.I)
    return f"What is {what}?"


def _ask_user_arguments(text: str) -> dict[str, Any] | None:
    question = _question_first(text)
    return {"question": question} if question else None


def _calculator_arguments(text: str) -> dict[str, Any] | None:
    expression = find_expression(text)
    return {"expression": expression} if expression else None


def _current_time_arguments(text: str) -> dict[str, Any] | None:
    return {} if _TIME_RE.search(text) else None


def _web_search_arguments(text: str) -> dict[str, Any] | None:
    query = _search_query(text)
    return {"query": query} if query else None


# The tools the offline model knows (llm_tasks.TOOLS), in the order it considers them:
# `ask_user` first, so "ask me my age first, then what is 2+2" asks first.
TOOL_ARGUMENTS: dict[str, Callable[[str], dict[str, Any] | None]] = {
    llm_tasks.ASK_USER: _ask_user_arguments,
    llm_tasks.CALCULATOR: _calculator_arguments,
    llm_tasks.CURRENT_TIME: _current_time_arguments,
    llm_tasks.WEB_SEARCH: _web_search_arguments,
}


def _tool_arguments(name: str, text: str) -> dict[str, Any] | None:
    decide = TOOL_ARGUMENTS.get(name)
    return decide(text) if decide is not None else None


def _tool_schemas(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name"):
            schemas[str(function["name"])] = function.get("parameters") or {}
    return schemas


def decide_tool_call(text: str, tools: list[dict[str, Any]], tool_choice: Any) -> ToolCall | None:
    schemas = _tool_schemas(tools)
    if not schemas or tool_choice == "none":
        return None
    forced: str | None = None
    if isinstance(tool_choice, dict):
        forced = (tool_choice.get("function") or {}).get("name")
    if forced:
        arguments = _tool_arguments(forced, text)
        if arguments is None:
            arguments = minimal_value(schemas.get(forced, {}))
        return ToolCall(forced, json.dumps(arguments))
    for name in TOOL_ARGUMENTS:
        if name in schemas:
            arguments = _tool_arguments(name, text)
            if arguments is not None:
                return ToolCall(name, json.dumps(arguments))
    if tool_choice == "required":
        name = next(iter(schemas))
        return ToolCall(name, json.dumps(minimal_value(schemas[name])))
    return None


def parallel_calculations(text: str, tools: list[dict[str, Any]], tool_choice: Any) -> list[ToolCall]:
    """One calculator call per ";"-separated expression, when there are at least two."""
    if llm_tasks.CALCULATOR not in _tool_schemas(tools) or tool_choice == "none" or isinstance(tool_choice, dict):
        return []
    expressions = [find_expression(part) for part in text.split(";")]
    calls = [ToolCall(llm_tasks.CALCULATOR, json.dumps({"expression": e})) for e in expressions if e]
    return calls if len(calls) >= 2 else []


def _tool_name_for(messages: list[dict[str, Any]], tool_call_id: str) -> str:
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id") == tool_call_id:
                return str((call.get("function") or {}).get("name", ""))
    return ""


def _search_summary(result: str) -> str:
    try:
        parsed = json.loads(result)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        parsed = parsed.get("results") or [parsed]
    if isinstance(parsed, list) and parsed and all(isinstance(item, dict) for item in parsed):
        parts = []
        for item in parsed[:3]:
            title = str(item.get("title", "")).strip()
            body = str(item.get("body") or item.get("snippet") or item.get("content") or "").strip()
            parts.append(f"{title}: {body}" if title and body else title or body)
        summary = " ".join(p for p in parts if p)
    else:
        summary = result
    snippet = " ".join(summary.split()[:60])
    return f"Here is what the web search found: {snippet}" if snippet else "The web search found nothing."


def answer_tool_result(messages: list[dict[str, Any]]) -> str:
    last = messages[-1]
    result = message_text(last).strip()
    name = _tool_name_for(messages, str(last.get("tool_call_id", "")))
    if _REJECTED_RE.search(result):
        return f"You rejected the {name or 'tool'} call, so I did not run it."
    if name == llm_tasks.ASK_USER:
        return f"Thank you. You told me: {result}"
    if _ERROR_RE.search(result):
        tool = f"The {name} tool" if name else "The tool"
        return f"{tool} reported an error: {result}"
    if name == llm_tasks.CALCULATOR:
        return f"The result is {result}."
    if name == llm_tasks.CURRENT_TIME:
        return f"It is {result}."
    if name == llm_tasks.WEB_SEARCH:
        return _search_summary(result)
    tool = f"The {name} tool" if name else "The tool"
    return f"{tool} returned: {result}"


def known_user_facts(system_prompt: str) -> list[str]:
    """Bullet facts under the system prompt's "# What you know about the user" and "# Summary
    of the earlier conversation" headings."""
    facts = []
    for heading in _KNOWN_ABOUT_USER_HEADING.finditer(system_prompt):
        for line in system_prompt[heading.end() :].splitlines():
            if line.lstrip().startswith("#"):
                break
            bullet = _BULLET_RE.match(line)
            if bullet:
                facts.append(bullet.group("fact"))
    return facts


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _facts_for(question: str, facts: list[str]) -> list[str] | None:
    """Facts that answer a question about the user; None if it is not a question about them."""
    if _EVERYTHING_RE.search(question):
        return facts
    for question_pattern, fact_pattern in _TOPICS:
        if question_pattern.search(question):
            return [f for f in facts if fact_pattern.search(f)]
    if re.search(r"\b(?:my|i|me)\b", question, re.I):
        asked = set(content_words(question))
        overlapping = [f for f in facts if asked & set(content_words(f))]
        return overlapping or None
    return None


def _without_toxic_words(text: str) -> str:
    cleaned = re.sub(r"\s{2,}", " ", _TOXIC_RE.sub("", text))
    return re.sub(r"\s+([,.;:!?])", r"\1", cleaned).strip()


def plain_answer(messages: list[dict[str, Any]]) -> str:
    system_prompt = "\n".join(message_text(m) for m in messages if m.get("role") in ("system", "developer"))
    user_turns = [message_text(m) for m in messages if m.get("role") == "user"]
    question = user_turns[-1].strip() if user_turns else ""
    earlier: list[str] = [f for turn in user_turns[:-1] for f in extract_facts(turn)]
    facts = apply_facts(known_user_facts(system_prompt), earlier)

    if _GREETING_RE.match(question):
        return (
            "Hello! I am the agentmesh offline model. Tell me about yourself, ask me what I remember "
            "about you, or ask me to calculate something."
        )
    told_now = [f for f in extract_facts(question) if not f.startswith("NOT: ")]
    if told_now and not question.rstrip().endswith("?"):
        return f"Noted: {_join([second_person(f) for f in told_now])}. {OFFLINE_NOTE}"
    relevant = _facts_for(question, facts)
    if relevant:
        return f"From what you told me, {_join([second_person(f) for f in relevant])}. {OFFLINE_NOTE}"
    if relevant is not None:
        return f"You have not told me that yet, so I cannot say. {OFFLINE_NOTE}"
    gist = " ".join(_without_toxic_words(question).rstrip(" ?!.").split()[:25])
    if not gist:
        return f"I did not receive a question. {OFFLINE_NOTE}"
    return (
        f'You asked: "{gist}". I am the agentmesh offline model, so I cannot look this up; I can answer '
        "from this conversation, what I remember about you, and my tools."
    )


def answer(messages: list[dict[str, Any]], tools: list[dict[str, Any]], tool_choice: Any) -> Reply:
    if not messages:
        return Reply(text=f"I did not receive any messages. {OFFLINE_NOTE}")
    last = messages[-1]
    if last.get("role") == "tool":
        # Parallel calls: one sentence per result, in call order.
        start = len(messages)
        while start > 0 and messages[start - 1].get("role") == "tool":
            start -= 1
        return Reply(text=" ".join(answer_tool_result(messages[: i + 1]) for i in range(start, len(messages))))
    if last.get("role") == "user" and tools:
        parallel = parallel_calculations(message_text(last), tools, tool_choice)
        if parallel:
            return Reply(tool_call=parallel[0], more_calls=tuple(parallel[1:]))
        call = decide_tool_call(message_text(last), tools, tool_choice)
        if call is not None:
            return Reply(tool_call=call)
    return Reply(text=plain_answer(messages))
