"""/openapi.json: a valid OpenAPI 3.1 document generated from the descriptors."""

from __future__ import annotations

import jsonschema
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31

from gateway.descriptors import load_descriptor_set
from gateway.openapi import build_openapi
from gateway.settings import DEFAULT_DESCRIPTOR_SET


@pytest.fixture(scope="module")
def document() -> dict:
    api = load_descriptor_set(DEFAULT_DESCRIPTOR_SET)
    return build_openapi(api, title="agentmesh API", version="v1", emit_unpopulated=True)


def test_document_is_valid_openapi_3_1(document: dict) -> None:
    jsonschema.validate(document, OPENAPI_31)
    assert document["openapi"] == "3.1.0"


def test_every_component_schema_is_valid_json_schema(document: dict) -> None:
    for name, schema in document["components"]["schemas"].items():
        assert isinstance(name, str)
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_reference_resolves(document: dict) -> None:
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    schemas = document["components"]["schemas"]
    missing = {ref for ref in refs if ref.removeprefix("#/components/schemas/") not in schemas}
    assert not missing


def test_every_binding_is_an_operation_including_additional_bindings_and_verbs(document: dict) -> None:
    api = load_descriptor_set(DEFAULT_DESCRIPTOR_SET)
    paths = document["paths"]
    assert set(paths["/v1/auth/jwks"]) == {"get"}
    assert set(paths["/.well-known/jwks.json"]) == {"get"}
    assert set(paths["/v1/sessions/{session_id}"]) == {"get", "patch", "delete"}
    assert "post" in paths["/v1/sessions/{session_id}:chat"]
    assert "post" in paths["/v1/memories:search"]
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids)) == len(api.bindings)
    assert {"AuthService_GetJwks", "AuthService_GetJwks_2"} <= set(operation_ids)


def test_proto_comments_become_descriptions(document: dict) -> None:
    register = document["paths"]["/v1/auth/register"]["post"]
    assert register["description"].startswith("Creates a user with the given email and password")
    session = document["components"]["schemas"]["agentmesh.sessions.v1.Session"]
    assert session["description"] == "A chat session."
    assert session["properties"]["session_id"]["readOnly"] is True
    assert "UUID" in session["properties"]["session_id"]["description"]
    tags = {tag["name"]: tag["description"] for tag in document["tags"]}
    assert tags["agentmesh.memory.v1.MemoryService"].startswith("MemoryService keeps long-term facts")
    assert "buf:lint" not in str(document)


def test_parameters_come_from_path_variables_and_remaining_fields(document: dict) -> None:
    summary = document["paths"]["/v1/evals/metrics/{metric}/summary"]["get"]
    params = {(p["name"], p["in"]) for p in summary["parameters"]}
    assert params == {("metric", "path"), ("window", "query")}
    chat = document["paths"]["/v1/sessions/{session_id}:chat"]["post"]
    body_schema = chat["requestBody"]["content"]["application/json"]["schema"]
    assert {"message", "multitask_strategy", "on_disconnect"} <= set(body_schema["properties"])
    assert [p["name"] for p in chat["parameters"]] == ["session_id"]


def test_response_body_and_streaming_responses(document: dict) -> None:
    me = document["paths"]["/v1/auth/me"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert me["allOf"][0] == {"$ref": "#/components/schemas/agentmesh.auth.v1.User"}
    stream = document["paths"]["/v1/sessions/{session_id}:stream"]["post"]["responses"]["200"]["content"]
    assert set(stream) == {"application/x-ndjson", "text/event-stream"}
    line = stream["application/x-ndjson"]["schema"]
    assert line["properties"]["result"] == {"$ref": "#/components/schemas/agentmesh.agent.v1.ChatEvent"}


def test_errors_security_and_int64(document: dict) -> None:
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    status = document["components"]["schemas"]["google.rpc.Status"]
    assert set(status["required"]) == {"code", "message", "details"}
    default = document["paths"]["/v1/sessions"]["get"]["responses"]["default"]
    assert default["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/google.rpc.Status"}
    latency = document["components"]["schemas"]["agentmesh.agent.v1.ChatResponse"]["properties"]["latency_ms"]
    jsonschema.validate("123", latency)
    jsonschema.validate(123, latency)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("12x", latency)


def test_required_fields_are_standard_json_schema_required(document: dict) -> None:
    # Before: `x-required-fields`, which no OpenAPI tool reads.
    text = str(document)
    assert "x-required-fields" not in text
    chat = document["paths"]["/v1/sessions/{session_id}:chat"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["message"]  # session_id is REQUIRED too, but comes from the path
    login = document["paths"]["/v1/auth/login"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "password" in login["required"]
    # A request that leaves out a required field fails the schema, as a client validator would see it.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"email": "a@example.com"}, login)


def test_required_is_left_out_when_responses_omit_empty_fields() -> None:
    api = load_descriptor_set(DEFAULT_DESCRIPTOR_SET)
    sparse = build_openapi(api, title="t", version="v1", emit_unpopulated=False)
    ours = {name: schema for name, schema in sparse["components"]["schemas"].items() if name.startswith("agentmesh.")}
    assert ours and all("required" not in schema for schema in ours.values())


def test_login_documents_the_oauth2_error_shape(document: dict) -> None:
    responses = document["paths"]["/v1/auth/login"]["post"]["responses"]
    schema = responses["400"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/OAuth2Error"} in schema["oneOf"]
    oauth2 = document["components"]["schemas"]["OAuth2Error"]
    jsonschema.validate({"error": "invalid_grant", "error_description": "x"}, oauth2)
    register = document["paths"]["/v1/auth/register"]["post"]["responses"]["400"]
    assert register["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/google.rpc.Status"}
