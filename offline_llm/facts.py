"""Memory facts: extraction from user turns (`memory_facts`) and resolution (`memory_resolution`).

A fact is a short sentence without a subject, "Lives in Berlin", built from a first-person statement
of the user. It is made of a predicate prefix and a value. The predicates the offline model knows:

| user says                                   | fact                      | key            | single |
| ------------------------------------------- | ------------------------- | -------------- | ------ |
| my name is X / call me X / I'm called X     | Name is X                 | name           | yes    |
| I live in X / I moved to X / I'm living in X| Lives in X                | lives in       | yes    |
| I work at X / I work for X                  | Works at X                | works at       | yes    |
| I work as X                                 | Works as X                | works as       | yes    |
| I'm from X / I come from X                  | Is from X                 | is from        | yes    |
| I'm N years old                             | Is N years old            | age            | yes    |
| my favourite X is Y                         | Favourite X is Y          | favourite X    | yes    |
| my dog's name is X / my dog is called X     | Dog's name is X           | dog's name     | yes    |
| I love / adore X                            | Loves X                   | sentiment      | no     |
| I like / enjoy / prefer X                   | Likes / Enjoys / Prefers X| sentiment      | no     |
| I hate X / I dislike X / I don't like X     | Hates X / Dislikes X      | sentiment      | no     |
| I'm allergic to X / I have an allergy to X  | Is allergic to X          | is allergic to | no     |
| I have a X                                  | Has a X                   | has            | no     |
| I speak X / I study X                       | Speaks X / Studies X      | speaks/studies | no     |
| I'm a X / I am an X                         | Is a X                    | is a           | no     |

Retractions ("I no longer like X", "I don't live in Paris anymore", "forget that I like X",
"I'm not allergic to nuts anymore") give the retracted fact prefixed with "NOT: ".
Questions (ending in "?" or opening with a question word) and chit-chat give no facts.

Resolution of a candidate against existing facts, in this order:
1. "NOT: F": DELETE the existing fact equal to F or with F's key and value (for sentiment, any
   positive or negative verb about the same value); NOOP with an empty target when none matches.
2. Equal text (case and punctuation ignored), or the same key and value → NOOP with that id
   ("Likes hiking" vs "Loves hiking" is the same sentiment and value, so NOOP too).
3. Same single-valued key with a different value ("Lives in Paris" → "Lives in Berlin") → UPDATE.
   Sentiment about the same value with the opposite polarity ("Loves X" → "Hates X") → UPDATE.
4. Otherwise ADD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from offline_llm.text import content_words

RETRACTION_PREFIX = "NOT: "

Action = Literal["ADD", "UPDATE", "DELETE", "NOOP"]


@dataclass(frozen=True)
class Predicate:
    key: str
    fact_prefix: str
    you_prefix: str
    single_valued: bool
    polarity: int = 0


PREDICATES: tuple[Predicate, ...] = (
    Predicate("name", "Name is", "your name is", True),
    Predicate("lives in", "Lives in", "you live in", True),
    Predicate("works at", "Works at", "you work at", True),
    Predicate("works as", "Works as", "you work as", True),
    Predicate("is from", "Is from", "you are from", True),
    Predicate("is allergic to", "Is allergic to", "you are allergic to", False),
    Predicate("sentiment", "Loves", "you love", False, polarity=1),
    Predicate("sentiment", "Likes", "you like", False, polarity=1),
    Predicate("sentiment", "Enjoys", "you enjoy", False, polarity=1),
    Predicate("sentiment", "Prefers", "you prefer", False, polarity=1),
    Predicate("sentiment", "Hates", "you hate", False, polarity=-1),
    Predicate("sentiment", "Dislikes", "you dislike", False, polarity=-1),
    Predicate("speaks", "Speaks", "you speak", False),
    Predicate("studies", "Studies", "you study", False),
    Predicate("has", "Has", "you have", False),
    Predicate("is a", "Is a", "you are a", False),
    Predicate("is a", "Is an", "you are an", False),
)
_BY_PREFIX = sorted(PREDICATES, key=lambda p: -len(p.fact_prefix))

_VERB_FACT = {
    "love": "Loves",
    "adore": "Loves",
    "like": "Likes",
    "enjoy": "Enjoys",
    "prefer": "Prefers",
    "hate": "Hates",
    "dislike": "Dislikes",
    "detest": "Hates",
    "speak": "Speaks",
    "study": "Studies",
}

_I = r"i(?:'m| am)"
_STATEMENT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), template)
    for pattern, template in (
        (r"^(?:my name is|my name's|call me|i'm called|i am called)\s+(?P<v>.+)", "Name is {v}"),
        (r"^my (?P<t>\w+)(?:'s name is| is called| is named)\s+(?P<v>.+)", "{T}'s name is {v}"),
        (r"^my (?:favourite|favorite) (?P<t>\w+(?: \w+)?) is\s+(?P<v>.+)", "Favourite {t} is {v}"),
        (r"^(?:i live|i reside|" + _I + r" living|i(?:'ve| have)? moved)\s+(?:in|to)\s+(?P<v>.+)", "Lives in {v}"),
        (r"^i work (?:at|for)\s+(?P<v>.+)", "Works at {v}"),
        (r"^i work as\s+(?P<v>.+)", "Works as {v}"),
        (r"^(?:" + _I + r" from|i come from)\s+(?P<v>.+)", "Is from {v}"),
        (r"^" + _I + r" (?P<v>\d+) years? old", "Is {v} years old"),
        (r"^(?:" + _I + r" allergic to|i have an? allergy to)\s+(?P<v>.+)", "Is allergic to {v}"),
        (r"^i (?:do not|don't) (?:really )?(?:like|love|enjoy)\s+(?P<v>.+)", "Dislikes {v}"),
        (
            r"^i (?:really |absolutely |truly )?(?P<verb>love|adore|like|enjoy|prefer|hate|dislike|detest"
            r"|speak|study)\s+(?P<v>.+)",
            "{VERB} {v}",
        ),
        (r"^" + _I + r" studying\s+(?P<v>.+)", "Studies {v}"),
        (r"^i (?:have|own|got) (?P<v>(?:a|an|two|three|\d+) .+)", "Has {v}"),
        (r"^" + _I + r" (?P<v>(?:a|an) .+)", "Is {v}"),
    )
)

_QUESTION_START = re.compile(
    r"^(?:what|where|who|whom|whose|when|why|how|which|do|does|did|can|could|would|should|will|is|are"
    r"|am|have|has)\b",
    re.IGNORECASE,
)
_CLAUSE_SPLIT = re.compile(
    r"(?<=[.!?;\n])\s*|,?\s+(?:and|but|also)\s+(?=(?:i|i'm|my)\b)|,\s+(?=(?:i|i'm|my)\b)", re.IGNORECASE
)
_LEAD_IN = re.compile(
    r"^(?:(?:hi|hello|hey|well|so|oh|ok|okay|also|actually|btw|by the way|anyway|now|and|but|yes|"
    r"no)\b[\s,!]*)+",
    re.IGNORECASE,
)
_FORGET = re.compile(r"^(?:please\s+)?forget\s+(?:that\s+|about\s+)?", re.IGNORECASE)
_NO_LONGER = re.compile(r"\bno longer\b|\bany ?more\b", re.IGNORECASE)
_VALUE_TAIL = re.compile(r"[\s,]+(?:too|as well|a lot|very much|so much|now|though)$", re.IGNORECASE)


def _clean_value(value: str) -> str:
    value = value.strip().strip(" \t\"'.,!;:")
    while True:
        trimmed = _VALUE_TAIL.sub("", value).strip(" ,.!")
        if trimmed == value:
            return value
        value = trimmed


def _statement_fact(clause: str) -> str | None:
    for pattern, template in _STATEMENT_PATTERNS:
        match = pattern.match(clause)
        if match is None:
            continue
        groups = match.groupdict()
        value = _clean_value(groups["v"])
        if not value:
            return None
        if template.startswith("Name is"):
            # A name is the next few words, not the rest of the sentence ("Ana and I'm 30").
            value = " ".join(value.split()[:3])
        topic = (groups.get("t") or "").lower()
        verb = _VERB_FACT.get((groups.get("verb") or "").lower(), "")
        return template.format(v=value, t=topic, T=topic.capitalize(), VERB=verb)
    return None


def _retraction_clause(clause: str) -> str | None:
    """The positive statement a retraction takes back, or None if the clause retracts nothing."""
    forget = _FORGET.match(clause)
    if forget:
        return clause[forget.end() :]
    if not _NO_LONGER.search(clause):
        return None
    positive = _NO_LONGER.sub(" ", clause)
    positive = re.sub(r"\b(?:do not|don't|does not|doesn't)\s+", "", positive, flags=re.IGNORECASE)
    positive = re.sub(r"\b(i'm|i am)\s+not\b", r"\1", positive, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", positive).strip()


def clauses(text: str) -> list[str]:
    """Statements of a message, each without lead-in words; questions are dropped."""
    found: list[str] = []
    for raw in _CLAUSE_SPLIT.split(text):
        clause = raw.strip() if raw else ""
        if not clause or clause.endswith("?"):
            continue
        clause = _LEAD_IN.sub("", clause).strip()
        if clause and not _QUESTION_START.match(clause):
            found.append(clause.replace("\u2019", "'"))
    return found


def extract_facts(text: str) -> list[str]:
    """Facts stated by the user in one message, retractions prefixed with "NOT: "."""
    facts: list[str] = []
    for clause in clauses(text):
        retracted = _retraction_clause(clause)
        if retracted is not None:
            fact = _statement_fact(retracted)
            if fact and not fact.startswith("Dislikes"):
                facts.append(RETRACTION_PREFIX + fact)
            continue
        fact = _statement_fact(clause)
        if fact and fact not in facts:
            facts.append(fact)
    return facts


def extract_user_facts(messages: list[dict[str, object]]) -> list[str]:
    facts: list[str] = []
    for message in messages:
        if message.get("role") != "user" or not isinstance(message.get("content"), str):
            continue
        for fact in extract_facts(str(message["content"])):
            if fact not in facts:
                facts.append(fact)
    return facts


@dataclass(frozen=True)
class ParsedFact:
    key: str
    value: str
    single_valued: bool
    polarity: int
    predicate: Predicate | None


_DYNAMIC_SINGLE = (
    re.compile(r"^(?P<k>favou?rite \w+(?: \w+)?) is (?P<v>.+)$", re.IGNORECASE),
    re.compile(r"^(?P<k>\w+'s name) is (?P<v>.+)$", re.IGNORECASE),
    re.compile(r"^is (?P<v>\d+) years old$", re.IGNORECASE),
)


def normalise(text: str) -> str:
    return " ".join(content_words(text))


def parse_fact(fact: str) -> ParsedFact | None:
    text = fact.strip().rstrip(".")
    for pattern in _DYNAMIC_SINGLE:
        match = pattern.match(text)
        if match:
            key = match.groupdict().get("k") or "age"
            return ParsedFact(key.lower().replace("favorite", "favourite"), normalise(match["v"]), True, 0, None)
    lowered = text.lower()
    for predicate in _BY_PREFIX:
        prefix = predicate.fact_prefix.lower() + " "
        if lowered.startswith(prefix):
            value = normalise(text[len(prefix) :])
            return ParsedFact(predicate.key, value, predicate.single_valued, predicate.polarity, predicate)
    return None


@dataclass(frozen=True)
class ExistingFact:
    id: str
    text: str


@dataclass(frozen=True)
class Resolution:
    action: Action
    target_id: str
    text: str


def _same_meaning(candidate: str, existing: str) -> bool:
    if normalise(candidate) == normalise(existing):
        return True
    a, b = parse_fact(candidate), parse_fact(existing)
    return a is not None and b is not None and a.key == b.key and a.value == b.value and (a.polarity == b.polarity)


def resolve_fact(candidate: str, existing: list[ExistingFact]) -> Resolution:
    candidate = candidate.strip()
    if candidate.upper().startswith("NOT:"):
        retracted = candidate[4:].strip()
        for fact in existing:
            parsed_old, parsed_new = parse_fact(fact.text), parse_fact(retracted)
            same_value = (
                parsed_old is not None
                and parsed_new is not None
                and parsed_old.key == parsed_new.key
                and parsed_old.value == parsed_new.value
            )
            if same_value or normalise(fact.text) == normalise(retracted):
                return Resolution("DELETE", fact.id, fact.text)
        return Resolution("NOOP", "", "")
    for fact in existing:
        if _same_meaning(candidate, fact.text):
            return Resolution("NOOP", fact.id, fact.text)
    new = parse_fact(candidate)
    if new is not None:
        for fact in existing:
            old = parse_fact(fact.text)
            if old is None or old.key != new.key:
                continue
            if new.single_valued or (new.key == "sentiment" and old.value == new.value):
                return Resolution("UPDATE", fact.id, candidate)
    return Resolution("ADD", "", candidate)


def apply_facts(known: list[str], candidates: list[str]) -> list[str]:
    """Known facts after resolving each candidate in order, as the memory service would."""
    facts = list(known)
    for candidate in candidates:
        existing = [ExistingFact(str(i), text) for i, text in enumerate(facts)]
        outcome = resolve_fact(candidate, existing)
        if outcome.action == "ADD":
            facts.append(outcome.text)
        elif outcome.action == "UPDATE":
            facts[int(outcome.target_id)] = outcome.text
        elif outcome.action == "DELETE":
            del facts[int(outcome.target_id)]
    return facts


def second_person(fact: str) -> str:
    """'Lives in Berlin' -> 'you live in Berlin', for answering the user about themselves."""
    text = fact.strip().rstrip(".")
    match = _DYNAMIC_SINGLE[0].match(text)
    if match:
        return f"your {match['k'].lower()} is {match['v']}"
    match = _DYNAMIC_SINGLE[1].match(text)
    if match:
        return f"your {match['k'][0].lower()}{match['k'][1:]} is {match['v']}"
    match = _DYNAMIC_SINGLE[2].match(text)
    if match:
        return f"you are {match['v']} years old"
    for predicate in _BY_PREFIX:
        if text.lower().startswith(predicate.fact_prefix.lower() + " "):
            return f"{predicate.you_prefix} {text[len(predicate.fact_prefix) + 1 :]}"
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
