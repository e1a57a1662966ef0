"""HTTP -> request message and response message -> JSON, on a descriptor set the gateway never saw.

The library service below exists only in this test: if the gateway serves it correctly, a new
annotated RPC needs no gateway change.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, timestamp_pb2

from gateway.descriptors import ApiDescriptors, HttpBinding, build_descriptors, load_descriptor_set
from gateway.errors import GatewayError
from gateway.routing import RouteMatch, Router
from gateway.settings import DEFAULT_DESCRIPTOR_SET
from gateway.transcoding import build_request, response_json

F = descriptor_pb2.FieldDescriptorProto
PKG = "example.library.v1"


def _field(
    name: str, number: int, kind: int, *, type_name: str = "", repeated: bool = False
) -> descriptor_pb2.FieldDescriptorProto:
    field = F(name=name, number=number, type=kind, json_name=_camel(name))
    field.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
    if type_name:
        field.type_name = type_name
    return field


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _message(name: str, *fields: descriptor_pb2.FieldDescriptorProto) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=name)
    message.field.extend(fields)
    return message


def _method(name: str, request: str, response: str, rule: http_pb2.HttpRule) -> descriptor_pb2.MethodDescriptorProto:
    method = descriptor_pb2.MethodDescriptorProto(
        name=name, input_type=f".{PKG}.{request}", output_type=f".{PKG}.{response}"
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    return method


def library_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    timestamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp)
    ts = ".google.protobuf.Timestamp"
    file = descriptor_pb2.FileDescriptorProto(
        name="example/library/v1/library.proto",
        package=PKG,
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    file.enum_type.add(name="Genre").value.extend(
        [
            descriptor_pb2.EnumValueDescriptorProto(name="GENRE_UNSPECIFIED", number=0),
            descriptor_pb2.EnumValueDescriptorProto(name="FICTION", number=1),
        ]
    )
    genre = f".{PKG}.Genre"
    file.message_type.extend(
        [
            _message("Author", _field("name", 1, F.TYPE_STRING), _field("age", 2, F.TYPE_INT32)),
            _message(
                "Book",
                _field("name", 1, F.TYPE_STRING),
                _field("pages", 2, F.TYPE_INT64),
                _field("published", 3, F.TYPE_BOOL),
                _field("tags", 4, F.TYPE_STRING, repeated=True),
                _field("genre", 5, F.TYPE_ENUM, type_name=genre),
                _field("author", 6, F.TYPE_MESSAGE, type_name=f".{PKG}.Author"),
                _field("created_at", 7, F.TYPE_MESSAGE, type_name=ts),
            ),
            _message(
                "ListBooksRequest",
                _field("shelf", 1, F.TYPE_STRING),
                _field("page_size", 2, F.TYPE_INT32),
                _field("tags", 3, F.TYPE_STRING, repeated=True),
                _field("author", 4, F.TYPE_MESSAGE, type_name=f".{PKG}.Author"),
                _field("include_drafts", 5, F.TYPE_BOOL),
                _field("genre", 6, F.TYPE_ENUM, type_name=genre),
                _field("since", 7, F.TYPE_MESSAGE, type_name=ts),
            ),
            _message("ListBooksResponse", _field("books", 1, F.TYPE_MESSAGE, type_name=f".{PKG}.Book", repeated=True)),
            _message(
                "UpdateBookRequest",
                _field("book", 1, F.TYPE_MESSAGE, type_name=f".{PKG}.Book"),
                _field("reason", 2, F.TYPE_STRING),
            ),
            _message(
                "CreateBookRequest",
                _field("shelf", 1, F.TYPE_STRING),
                _field("book", 2, F.TYPE_MESSAGE, type_name=f".{PKG}.Book"),
                _field("password", 3, F.TYPE_STRING),
            ),
            _message("GetAuthorRequest", _field("name", 1, F.TYPE_STRING)),
            _message("GetAuthorResponse", _field("author", 1, F.TYPE_MESSAGE, type_name=f".{PKG}.Author")),
        ]
    )
    create_rule = http_pb2.HttpRule(post="/v1/shelves/{shelf}/books", body="*")
    create_rule.additional_bindings.add(post="/v1/books", body="*")
    service = file.service.add(name="LibraryService")
    service.method.extend(
        [
            _method(
                "ListBooks", "ListBooksRequest", "ListBooksResponse", http_pb2.HttpRule(get="/v1/shelves/{shelf}/books")
            ),
            _method(
                "UpdateBook",
                "UpdateBookRequest",
                "Book",
                http_pb2.HttpRule(patch="/v1/{book.name=shelves/*/books/*}", body="book"),
            ),
            _method("CreateBook", "CreateBookRequest", "Book", create_rule),
            _method(
                "GetAuthor",
                "GetAuthorRequest",
                "GetAuthorResponse",
                http_pb2.HttpRule(get="/v1/authors/{name}", response_body="author"),
            ),
        ]
    )
    return descriptor_pb2.FileDescriptorSet(file=[timestamp, file])


@pytest.fixture(scope="module")
def library() -> ApiDescriptors:
    return build_descriptors(library_descriptor_set())


@pytest.fixture(scope="module")
def router(library: ApiDescriptors) -> Router[HttpBinding]:
    return Router(library.bindings)


def transcode(
    router: Router[HttpBinding],
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    content_type: str | None = None,
):
    match = router.resolve(method, path)
    assert isinstance(match, RouteMatch), match
    return build_request(match.route, match.variables, query, body, content_type)


def test_every_rule_and_additional_binding_becomes_a_route(library: ApiDescriptors) -> None:
    routes = {(b.http_method, b.template.source, b.method.name) for b in library.bindings}
    assert routes == {
        ("GET", "/v1/shelves/{shelf}/books", "ListBooks"),
        ("PATCH", "/v1/{book.name=shelves/*/books/*}", "UpdateBook"),
        ("POST", "/v1/shelves/{shelf}/books", "CreateBook"),
        ("POST", "/v1/books", "CreateBook"),
        ("GET", "/v1/authors/{name}", "GetAuthor"),
    }
    assert [s.full_name for s in library.services] == [f"{PKG}.LibraryService"]


def test_query_parameters_fill_scalars_repeated_enums_timestamps_and_dotted_fields(router) -> None:
    query = urlencode(
        [
            ("page_size", "5"),
            ("tags", "a"),
            ("tags", "b"),
            ("author.name", "Ann"),
            ("author.age", "40"),
            ("include_drafts", "true"),
            ("genre", "FICTION"),
            ("since", "2024-01-02T03:04:05Z"),
        ]
    )
    message = transcode(router, "GET", "/v1/shelves/s%201/books", query)
    assert message.shelf == "s 1"
    assert message.page_size == 5
    assert list(message.tags) == ["a", "b"]
    assert (message.author.name, message.author.age) == ("Ann", 40)
    assert message.include_drafts is True
    assert message.genre == 1
    assert message.since.seconds == 1704164645


def test_query_parameters_accept_lower_camel_case_names(router) -> None:
    message = transcode(router, "GET", "/v1/shelves/s/books", "pageSize=7&includeDrafts=1")
    assert message.page_size == 7
    assert message.include_drafts is True


@pytest.mark.parametrize(
    ("query", "reason_fragment"),
    [
        ("bogus=1", "unknown field"),
        ("page_size=ten", "invalid value"),
        ("include_drafts=maybe", "invalid value"),
        ("page_size=1&page_size=2", "not repeated"),
        ("author=x", "is a message"),
        ("shelf=other", "already bound"),
        ("genre=NOT_A_GENRE", "genre"),
        ("page_size=99999999999", "page_size"),
    ],
)
def test_bad_query_parameters_are_invalid_argument(router, query: str, reason_fragment: str) -> None:
    with pytest.raises(GatewayError) as caught:
        transcode(router, "GET", "/v1/shelves/s/books", query)
    assert caught.value.http_status == 400
    assert reason_fragment in caught.value.message


def test_body_field_maps_json_to_that_field_and_path_wins(router) -> None:
    body = b'{"name": "ignored", "pages": "300", "tags": ["x"], "createdAt": "2024-01-01T00:00:00Z"}'
    message = transcode(router, "PATCH", "/v1/shelves/1/books/2", "reason=typo", body, "application/json")
    assert message.book.name == "shelves/1/books/2"
    assert message.book.pages == 300
    assert list(message.book.tags) == ["x"]
    assert message.book.created_at.seconds == 1704067200
    assert message.reason == "typo"


def test_query_cannot_reach_into_the_body_field(router) -> None:
    with pytest.raises(GatewayError) as caught:
        transcode(router, "PATCH", "/v1/shelves/1/books/2", "book.pages=3", b"{}", "application/json")
    assert caught.value.http_status == 400


def test_whole_body_accepts_proto_and_camel_case_names(router) -> None:
    body = b'{"book": {"name": "b", "published": true, "created_at": "2024-01-01T00:00:00Z", "genre": "FICTION"}}'
    message = transcode(router, "POST", "/v1/shelves/s/books", body=body, content_type="application/json")
    assert (message.shelf, message.book.name, message.book.published, message.book.genre) == ("s", "b", True, 1)
    camel = transcode(
        router,
        "POST",
        "/v1/books",
        body=b'{"book": {"createdAt": "1970-01-01T00:00:10Z"}}',
        content_type="application/json; charset=utf-8",
    )
    assert camel.book.created_at.seconds == 10


@pytest.mark.parametrize(
    "body",
    [
        b'{"book": {"nme": "typo"}}',
        b'{"unknown": 1}',
        b"[1, 2]",
        b"{not json",
        b'{"book": {"pages": "many"}}',
        b'{"book": {"tags": "not-a-list"}}',
        b"\xff\xfe",
    ],
)
def test_bad_json_bodies_are_invalid_argument_never_dropped(router, body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        transcode(router, "POST", "/v1/books", body=body, content_type="application/json")
    assert caught.value.http_status == 400
    assert caught.value.to_status().code == 3


def test_whole_body_rejects_query_parameters(router) -> None:
    with pytest.raises(GatewayError) as caught:
        transcode(router, "POST", "/v1/books", "book.name=x", b"{}", "application/json")
    assert caught.value.http_status == 400


def test_form_body_maps_fields_by_name_including_dotted_ones(router) -> None:
    form = urlencode({"book.name": "b", "book.pages": "12", "password": "p", "scope": ""}).encode()
    message = transcode(router, "POST", "/v1/books", body=form, content_type="application/x-www-form-urlencoded")
    assert (message.book.name, message.book.pages, message.password) == ("b", 12, "p")


def test_form_body_rejects_unknown_fields(router) -> None:
    form = urlencode({"book.name": "b", "color": "red"}).encode()
    with pytest.raises(GatewayError) as caught:
        transcode(router, "POST", "/v1/books", body=form, content_type="application/x-www-form-urlencoded")
    assert caught.value.http_status == 400


def test_unsupported_content_type_is_415(router) -> None:
    with pytest.raises(GatewayError) as caught:
        transcode(router, "POST", "/v1/books", body=b"name=x", content_type="text/plain")
    assert caught.value.http_status == 415
    with pytest.raises(GatewayError) as form_on_field:
        transcode(
            router, "PATCH", "/v1/shelves/1/books/2", body=b"name=x", content_type="application/x-www-form-urlencoded"
        )
    assert form_on_field.value.http_status == 415


def test_empty_body_is_an_empty_message(router) -> None:
    message = transcode(router, "POST", "/v1/shelves/s/books")
    assert message.shelf == "s"
    assert not message.HasField("book")


def test_response_json_uses_proto_names_and_emits_unpopulated_fields(library: ApiDescriptors) -> None:
    book_class = library.message_class(f"{PKG}.Book")
    book = book_class(name="b", tags=["t"])
    book.created_at.FromSeconds(0)
    emitted = response_json(book, "", emit_unpopulated=True)
    assert emitted == {
        "name": "b",
        "pages": "0",
        "published": False,
        "tags": ["t"],
        "genre": "GENRE_UNSPECIFIED",
        "created_at": "1970-01-01T00:00:00Z",
    }
    assert response_json(book, "", emit_unpopulated=False) == {
        "name": "b",
        "tags": ["t"],
        "created_at": "1970-01-01T00:00:00Z",
    }


def test_response_body_selects_one_field(library: ApiDescriptors) -> None:
    response_class = library.message_class(f"{PKG}.GetAuthorResponse")
    reply = response_class()
    reply.author.name = "Ann"
    assert response_json(reply, "author", emit_unpopulated=True) == {"name": "Ann", "age": 0}
    assert response_json(response_class(), "author", emit_unpopulated=True) == {"name": "", "age": 0}


def test_login_accepts_the_oauth2_password_form() -> None:
    api = load_descriptor_set(DEFAULT_DESCRIPTOR_SET)
    router = Router(api.bindings)
    form = urlencode({"username": "a@b.co", "password": "Secret1!", "grant_type": "password"}).encode()
    message = transcode(router, "POST", "/v1/auth/login", body=form, content_type="application/x-www-form-urlencoded")
    assert message.DESCRIPTOR.full_name == "agentmesh.auth.v1.LoginRequest"
    assert (message.username, message.password, message.grant_type) == ("a@b.co", "Secret1!", "password")
