"""`google.api.http` path templates: parsing, matching, and choosing the binding for a request.

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LITERAL = re.compile(r"[^/{}*:=]+$")

WILDCARD = "*"
DEEP_WILDCARD = "**"


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Variable:
    field_path: str
    start: int
    end: int  # exclusive; -1 when the variable ends with `**` and takes the rest of the path


@dataclass(frozen=True)
class PathTemplate:
    source: str
    segments: tuple[str, ...]  # literals, "*" or "**"
    variables: tuple[Variable, ...]
    verb: str

    @classmethod
    def parse(cls, source: str) -> PathTemplate:
        if not source.startswith("/"):
            raise TemplateError(f"{source!r}: a template starts with '/'")
        body, verb = _split_verb(source[1:], source)
        segments: list[str] = []
        variables: list[Variable] = []
        for token in _tokens(body, source):
            if token.startswith("{"):
                inner = token[1:-1]
                field_path, _, pattern = inner.partition("=")
                if not _IDENT.match(field_path):
                    raise TemplateError(f"{source!r}: bad field path {field_path!r}")
                parts = pattern.split("/") if pattern else [WILDCARD]
                start = len(segments)
                for part in parts:
                    segments.append(_segment(part, source))
                end = -1 if segments[-1] == DEEP_WILDCARD else len(segments)
                variables.append(Variable(field_path, start, end))
            else:
                segments.append(_segment(token, source))
        if DEEP_WILDCARD in segments[:-1]:
            raise TemplateError(f"{source!r}: '**' must be the last segment")
        names = [v.field_path for v in variables]
        if len(set(names)) != len(names):
            raise TemplateError(f"{source!r}: a field is bound twice")
        return cls(source, tuple(segments), tuple(variables), verb)

    @property
    def literal_count(self) -> int:
        return sum(1 for s in self.segments if s not in (WILDCARD, DEEP_WILDCARD))

    def openapi_path(self) -> str:
        """The template as an OpenAPI path: every variable becomes `{field.path}`."""
        parts: list[str] = []
        index = 0
        by_start = {v.start: v for v in self.variables}
        while index < len(self.segments):
            variable = by_start.get(index)
            if variable is not None:
                parts.append("{" + variable.field_path + "}")
                index = len(self.segments) if variable.end == -1 else variable.end
            else:
                parts.append(self.segments[index])
                index += 1
        return "/" + "/".join(parts) + (f":{self.verb}" if self.verb else "")

    def match(self, raw_path: str) -> dict[str, str] | None:
        """Match a request path (still percent-encoded) and return the bound variables.

        Single-segment variables are fully decoded; a multi-segment (`**`) variable keeps `%2F`
        encoded so that a slash inside a segment stays distinguishable from a separator, as the
        http.proto rules for reserved expansion require.
        """
        if not raw_path.startswith("/"):
            return None
        path = raw_path[1:]
        if self.verb:
            suffix = ":" + self.verb
            if not path.endswith(suffix):
                return None
            path = path[: -len(suffix)]
        parts = path.split("/")
        if not self._segments_match(parts):
            return None
        bound: dict[str, str] = {}
        for variable in self.variables:
            end = len(parts) if variable.end == -1 else variable.end
            taken = parts[variable.start : end]
            if len(taken) == 1 and variable.end != -1:
                bound[variable.field_path] = unquote(taken[0])
            else:
                bound[variable.field_path] = "/".join(unquote(p, errors="strict").replace("/", "%2F") for p in taken)
        return bound

    def _segments_match(self, parts: list[str]) -> bool:
        deep = self.segments and self.segments[-1] == DEEP_WILDCARD
        fixed = self.segments[:-1] if deep else self.segments
        if deep:
            # `**` matches zero or more segments (http.proto), but an empty path segment never.
            if len(parts) < len(fixed):
                return False
        elif len(parts) != len(fixed):
            return False
        for expected, actual in zip(fixed, parts, strict=False):
            if actual == "":
                return False
            if expected != WILDCARD and unquote(actual) != expected:
                return False
        return all(p != "" for p in parts[len(fixed) :])


def _split_verb(body: str, source: str) -> tuple[str, str]:
    # The verb is a ':' after the last '/' that is not inside braces.
    depth = 0
    last_slash = -1
    colon = -1
    for index, char in enumerate(body):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "/" and depth == 0:
            last_slash = index
            colon = -1
        elif char == ":" and depth == 0 and index > last_slash:
            colon = index
    if depth != 0:
        raise TemplateError(f"{source!r}: unbalanced braces")
    if colon == -1:
        return body, ""
    verb = body[colon + 1 :]
    if not _LITERAL.match(verb):
        raise TemplateError(f"{source!r}: bad verb {verb!r}")
    return body[:colon], verb


def _tokens(body: str, source: str) -> list[str]:
    tokens: list[str] = []
    current = ""
    depth = 0
    for char in body:
        if char == "{":
            if depth or current:
                raise TemplateError(f"{source!r}: a variable must be a whole segment")
            depth = 1
            current = char
        elif char == "}":
            if not depth:
                raise TemplateError(f"{source!r}: unbalanced braces")
            depth = 0
            current += char
        elif char == "/" and not depth:
            tokens.append(current)
            current = ""
        else:
            if current.startswith("{") and not depth:
                raise TemplateError(f"{source!r}: a variable must be a whole segment")
            current += char
    tokens.append(current)
    if any(t == "" for t in tokens):
        raise TemplateError(f"{source!r}: empty segment")
    return tokens


def _segment(text: str, source: str) -> str:
    if text in (WILDCARD, DEEP_WILDCARD) or _LITERAL.match(text):
        return text
    raise TemplateError(f"{source!r}: bad segment {text!r}")


class Routable(Protocol):
    @property
    def http_method(self) -> str: ...

    @property
    def template(self) -> PathTemplate: ...


R = TypeVar("R", bound=Routable)


@dataclass(frozen=True)
class RouteMatch(Generic[R]):
    route: R
    variables: dict[str, str]


@dataclass(frozen=True)
class NoRoute:
    """The path matched nothing (404), or only other methods (405, with `allowed`)."""

    allowed: frozenset[str]


class Router(Generic[R]):
    """Chooses the most specific binding for a request.

    Order: templates with a custom verb first (so `POST /v1/sessions/x:chat` is never taken for a
    session named `x:chat`), then more literal segments, then fewer `**`. When a verb template
    matches the path, only verb templates decide 405s, which keeps `GET /v1/sessions/x:chat` from
    silently reading a session called `x:chat`.
    """

    def __init__(self, routes: Sequence[R]) -> None:
        self._routes = sorted(routes, key=_specificity)

    @property
    def routes(self) -> list[R]:
        return list(self._routes)

    def resolve(self, http_method: str, raw_path: str) -> RouteMatch[R] | NoRoute:
        allowed: set[str] = set()
        verb_matched = False
        for route in self._routes:
            if verb_matched and not route.template.verb:
                break
            variables = route.template.match(raw_path)
            if variables is None:
                continue
            verb_matched = verb_matched or bool(route.template.verb)
            if route.http_method == http_method:
                return RouteMatch(route, variables)
            allowed.add(route.http_method)
        if http_method == "HEAD" and "GET" in allowed:
            return self.resolve("GET", raw_path)
        return NoRoute(frozenset(allowed))


def _specificity(route: Routable) -> tuple[int, int, int, int]:
    template = route.template
    deep = int(DEEP_WILDCARD in template.segments)
    return (0 if template.verb else 1, -template.literal_count, deep, -len(template.segments))
