"""google.api.http path templates: parsing, matching, and choosing a binding (404/405)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.routing import NoRoute, PathTemplate, RouteMatch, Router, TemplateError


def test_literal_template_matches_only_itself() -> None:
    template = PathTemplate.parse("/v1/sessions")
    assert template.match("/v1/sessions") == {}
    assert template.match("/v1/sessions/x") is None
    assert template.match("/v1/session") is None
    assert template.match("/v1/sessions/") is None


def test_single_segment_variable_is_percent_decoded() -> None:
    template = PathTemplate.parse("/v1/sessions/{session_id}")
    assert template.match("/v1/sessions/abc") == {"session_id": "abc"}
    assert template.match("/v1/sessions/a%20b%2Fc") == {"session_id": "a b/c"}
    assert template.match("/v1/sessions/a/b") is None
    assert template.match("/v1/sessions/") is None


def test_custom_verb_is_required_and_not_part_of_the_variable() -> None:
    template = PathTemplate.parse("/v1/sessions/{session_id}:chat")
    assert template.verb == "chat"
    assert template.match("/v1/sessions/s1:chat") == {"session_id": "s1"}
    assert template.match("/v1/sessions/s1:stream") is None
    assert template.match("/v1/sessions/s1") is None


def test_verb_on_a_literal_segment() -> None:
    template = PathTemplate.parse("/v1/memories:search")
    assert template.match("/v1/memories:search") == {}
    assert template.match("/v1/memories") is None


def test_deep_wildcard_variable_takes_the_rest_of_the_path_keeping_encoded_slashes() -> None:
    template = PathTemplate.parse("/v1/{name=files/**}")
    assert template.match("/v1/files/a/b/c") == {"name": "files/a/b/c"}
    assert template.match("/v1/files/a%2Fb/c") == {"name": "files/a%2Fb/c"}
    assert template.match("/v1/files") == {"name": "files"}
    assert template.match("/v1/other/a") is None


def test_deep_wildcard_variable_with_a_verb() -> None:
    template = PathTemplate.parse("/v1/{name=shelves/*/books/**}:archive")
    assert template.match("/v1/shelves/s1/books/b/2:archive") == {"name": "shelves/s1/books/b/2"}
    assert template.match("/v1/shelves/s1/books/b/2") is None


def test_multi_segment_variable_and_dotted_field_path() -> None:
    template = PathTemplate.parse("/v1/{book.name=shelves/*/books/*}")
    assert template.variables[0].field_path == "book.name"
    assert template.match("/v1/shelves/1/books/2") == {"book.name": "shelves/1/books/2"}
    assert template.match("/v1/shelves/1/books") is None
    assert template.openapi_path() == "/v1/{book.name}"


def test_plain_wildcards_match_one_segment_without_binding() -> None:
    template = PathTemplate.parse("/v1/*/items/{id}")
    assert template.match("/v1/anything/items/7") == {"id": "7"}
    assert template.match("/v1/a/b/items/7") is None


@pytest.mark.parametrize(
    "source",
    [
        "v1/no-leading-slash",
        "/v1/{unclosed",
        "/v1/{a}/{a}",
        "/v1/**/tail",
        "/v1/{1bad}",
        "/v1//double",
        "/v1/x{id}",
        "/v1/{id}:",
    ],
)
def test_malformed_templates_are_rejected(source: str) -> None:
    with pytest.raises(TemplateError):
        PathTemplate.parse(source)


def test_openapi_path_keeps_verbs_and_names_variables() -> None:
    assert PathTemplate.parse("/v1/sessions/{session_id}:stream").openapi_path() == "/v1/sessions/{session_id}:stream"
    assert PathTemplate.parse("/v1/{name=files/**}").openapi_path() == "/v1/{name}"


@dataclass(frozen=True)
class FakeRoute:
    http_method: str
    template: PathTemplate
    name: str


def route(method: str, path: str, name: str) -> FakeRoute:
    return FakeRoute(method, PathTemplate.parse(path), name)


@pytest.fixture
def router() -> Router[FakeRoute]:
    return Router(
        [
            route("GET", "/v1/sessions/{session_id}", "get"),
            route("DELETE", "/v1/sessions/{session_id}", "delete"),
            route("POST", "/v1/sessions/{session_id}:chat", "chat"),
            route("POST", "/v1/sessions/{session_id}:stream", "stream"),
            route("GET", "/v1/sessions/{session_id}/messages", "history"),
            route("GET", "/v1/{name=files/**}", "file"),
            route("GET", "/v1/files/latest", "latest"),
        ]
    )


def resolved_name(result: RouteMatch[FakeRoute] | NoRoute) -> str:
    assert isinstance(result, RouteMatch), result
    return result.route.name


def test_router_prefers_the_verb_binding(router: Router[FakeRoute]) -> None:
    assert resolved_name(router.resolve("POST", "/v1/sessions/s1:chat")) == "chat"
    assert resolved_name(router.resolve("POST", "/v1/sessions/s1:stream")) == "stream"
    assert resolved_name(router.resolve("GET", "/v1/sessions/s1")) == "get"


def test_router_prefers_literal_segments_over_wildcards(router: Router[FakeRoute]) -> None:
    assert resolved_name(router.resolve("GET", "/v1/files/latest")) == "latest"
    result = router.resolve("GET", "/v1/files/a/b")
    assert isinstance(result, RouteMatch) and result.variables == {"name": "files/a/b"}


def test_wrong_method_on_a_known_path_lists_the_allowed_methods(router: Router[FakeRoute]) -> None:
    result = router.resolve("PUT", "/v1/sessions/s1")
    assert result == NoRoute(frozenset({"GET", "DELETE"}))


def test_wrong_method_on_a_verb_path_is_405_not_a_session_named_like_the_verb(router: Router[FakeRoute]) -> None:
    result = router.resolve("GET", "/v1/sessions/s1:chat")
    assert result == NoRoute(frozenset({"POST"}))


def test_unknown_path_is_404(router: Router[FakeRoute]) -> None:
    assert router.resolve("GET", "/v2/nothing") == NoRoute(frozenset())
    assert router.resolve("GET", "/v1/sessions/s1/unknown") == NoRoute(frozenset())


def test_head_is_served_by_the_get_binding(router: Router[FakeRoute]) -> None:
    assert resolved_name(router.resolve("HEAD", "/v1/sessions/s1/messages")) == "history"
