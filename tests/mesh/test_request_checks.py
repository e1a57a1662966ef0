"""Invalid text and unparsable requests are INVALID_ARGUMENT for every gRPC caller, for every
service, and nothing is stored; bad page tokens too. Against the real mesh.

Before: NUL in a session name, a chat message, a memory or a trace reached Postgres, which refuses
NUL in text, and the call answered INTERNAL (with the SQL parameters in the service's log).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import structlog

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from runtime.errors import InvalidArgument
from runtime.logging import configure_logging
from runtime.request_checks import check_request
from tests.support.grpc_errors import rpc_failure
from tests.support.services import service_metadata
from tests.support.users import MeshUser


def marker() -> str:
    return f"secret-{uuid.uuid4().hex}"


@pytest.fixture
async def channels(mesh: Mesh) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    names = [name for name in ("sessions", "agent", "memory", "evals") if name in mesh.processes]
    opened = {name: grpc.aio.insecure_channel(mesh.addr(name)) for name in names}
    try:
        yield opened
    finally:
        for channel in opened.values():
            await channel.close()


def need(channels: dict[str, grpc.aio.Channel], name: str) -> grpc.aio.Channel:
    if name not in channels:
        pytest.skip(f"MESH_ONLY leaves out the {name} service")
    return channels[name]


def assert_invalid_text(failure) -> None:
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.reason == "INVALID_TEXT", failure


def no_marker_in_logs(log_dir: Path, text: str) -> None:
    for path in log_dir.glob("*.log"):
        assert text not in path.read_text(errors="replace"), f"{path.name} logged user content"


async def test_nul_in_a_session_name_is_refused_and_nothing_is_stored(
    channels: dict[str, grpc.aio.Channel], user: MeshUser, log_dir: Path
) -> None:
    stub = sessions_pb2_grpc.SessionServiceStub(need(channels, "sessions"))
    secret = marker()
    failure = await rpc_failure(
        stub.CreateSession(sessions_pb2.CreateSessionRequest(name=f"{secret}\x00x"), metadata=user.metadata)
    )
    assert_invalid_text(failure)
    assert secret not in failure.message
    listed = await stub.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=user.metadata)
    assert list(listed.sessions) == []
    no_marker_in_logs(log_dir, secret)


async def test_nul_in_a_chat_message_is_refused_and_nothing_is_stored(
    channels: dict[str, grpc.aio.Channel], user: MeshUser, log_dir: Path
) -> None:
    sessions = sessions_pb2_grpc.SessionServiceStub(need(channels, "sessions"))
    agent = agent_pb2_grpc.AgentServiceStub(need(channels, "agent"))
    session = (await sessions.CreateSession(sessions_pb2.CreateSessionRequest(), metadata=user.metadata)).session
    secret = marker()
    message = agent_pb2.Message(role="user", content=f"{secret}\x00")
    assert_invalid_text(
        await rpc_failure(
            agent.Chat(agent_pb2.ChatRequest(session_id=session.session_id, message=message), metadata=user.metadata)
        )
    )

    async def stream() -> None:
        request = agent_pb2.StreamChatRequest(session_id=session.session_id, message=message)
        async for _ in agent.StreamChat(request, metadata=user.metadata):
            pass

    assert_invalid_text(await rpc_failure(stream()))
    history = await agent.GetHistory(agent_pb2.GetHistoryRequest(session_id=session.session_id), metadata=user.metadata)
    assert list(history.messages) == []
    no_marker_in_logs(log_dir, secret)


async def test_nul_in_a_memory_is_refused_and_nothing_is_stored(
    channels: dict[str, grpc.aio.Channel], user: MeshUser, log_dir: Path
) -> None:
    stub = memory_pb2_grpc.MemoryServiceStub(need(channels, "memory"))
    secret = marker()
    failure = await rpc_failure(
        stub.AddMemories(memory_pb2.AddMemoriesRequest(facts=["fine", f"{secret}\x00"]), metadata=user.metadata)
    )
    assert_invalid_text(failure)
    assert "facts[1]" in failure.message
    listed = await stub.ListMemories(memory_pb2.ListMemoriesRequest(), metadata=user.metadata)
    assert list(listed.memories) == []
    no_marker_in_logs(log_dir, secret)


async def test_nul_in_a_trace_is_refused(
    channels: dict[str, grpc.aio.Channel], auth_stub, user: MeshUser, log_dir: Path
) -> None:
    stub = evals_pb2_grpc.EvalServiceStub(need(channels, "evals"))
    secret = marker()
    trace = evals_pb2.Trace(
        trace_id=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        user_id=user.user_id,
        input="hi",
        output=secret + "\x00",
    )
    as_agent = await service_metadata(auth_stub)  # RecordTrace is service-only
    failure = await rpc_failure(stub.RecordTrace(evals_pb2.RecordTraceRequest(trace=trace), metadata=as_agent))
    assert_invalid_text(failure)
    no_marker_in_logs(log_dir, secret)


async def test_bytes_that_do_not_parse_are_invalid_argument_not_internal(
    channels: dict[str, grpc.aio.Channel], user: MeshUser
) -> None:
    # A string field (name = 1) holding invalid UTF-8: grpc's own deserializer used to fail with INTERNAL.
    raw = need(channels, "sessions").unary_unary(
        "/agentmesh.sessions.v1.SessionService/CreateSession",
        request_serializer=lambda body: body,
        response_deserializer=sessions_pb2.CreateSessionResponse.FromString,
    )
    failure = await rpc_failure(raw(b"\x0a\x02\xff\xfe", metadata=user.metadata))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.reason == "MALFORMED_REQUEST"


BAD_TOKENS = ["%ff", "W1tdLFtdXQ", "WyIyMDI0LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgWyJ5Il1d", "x" * 5000, "\x00"]


@pytest.mark.parametrize("token", BAD_TOKENS)
async def test_bad_page_tokens_are_invalid_argument_on_every_list(
    channels: dict[str, grpc.aio.Channel], user: MeshUser, token: str
) -> None:
    calls = []
    if "sessions" in channels:
        stub = sessions_pb2_grpc.SessionServiceStub(channels["sessions"])
        calls.append(stub.ListSessions(sessions_pb2.ListSessionsRequest(page_token=token), metadata=user.metadata))
    if "memory" in channels:
        memory = memory_pb2_grpc.MemoryServiceStub(channels["memory"])
        calls.append(memory.ListMemories(memory_pb2.ListMemoriesRequest(page_token=token), metadata=user.metadata))
    if "evals" in channels:
        evals = evals_pb2_grpc.EvalServiceStub(channels["evals"])
        calls.append(evals.ListScores(evals_pb2.ListScoresRequest(page_token=token), metadata=user.metadata))
    assert calls, "the mesh runs none of the paged services"
    for call in calls:
        failure = await rpc_failure(call)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
        assert failure.reason in ("PAGE_TOKEN_INVALID", "INVALID_TEXT"), failure


def test_the_check_walks_nested_repeated_and_map_fields() -> None:
    check_request(agent_pb2.ChatRequest(session_id="s", message=agent_pb2.Message(role="user", content="ok ünïcode")))
    with pytest.raises(InvalidArgument, match=r"message\.content"):
        check_request(agent_pb2.ChatRequest(message=agent_pb2.Message(content="a\x00")))
    with pytest.raises(InvalidArgument, match=r"messages\[0\]\.content"):
        check_request(memory_pb2.AddMemoriesRequest(messages=[memory_pb2.ConversationMessage(content="\x00")]))
    bogus_enum = agent_pb2.ChatRequest(session_id="s")
    bogus_enum.multitask_strategy = 999  # type: ignore[assignment]
    with pytest.raises(InvalidArgument) as refused:
        check_request(bogus_enum)
    assert refused.value.reason == "INVALID_ENUM_VALUE"


async def test_database_errors_do_not_carry_the_statement_parameters(mesh: Mesh) -> None:
    # Before: SQLAlchemy's StatementError ended with "[parameters: ('<the user's text>',)]", and
    # the interceptor logged it whole with the traceback.
    from sqlalchemy import text

    from runtime.database import open_database
    from runtime.settings import CommonSettings

    settings = CommonSettings(_env_file=None, database_url=mesh.env["DATABASE_URL"])  # type: ignore[call-arg]
    database = await open_database(settings, schema="public", migrations=None)
    secret = marker()
    try:
        with pytest.raises(Exception) as failed:
            async with database.engine.connect() as conn:
                await conn.execute(text("SELECT CAST(:value AS integer)"), {"value": secret})
        # SQLAlchemy's own rendering hides them; asyncpg still quotes the value in its message,
        # which is why the interceptor logs a crash's type and stack, never its message (below).
        assert "parameters hidden" in str(failed.value)
        with pytest.raises(Exception) as nul:
            async with database.engine.connect() as conn:
                await conn.execute(text("SELECT CAST(:value AS text)"), {"value": secret + "\x00"})
        assert secret not in str(nul.value)
    finally:
        await database.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Puts the logging configuration back after a test that configures the services' logging:
    that configuration writes to the test's captured stderr, which is closed once the test
    ends, and a later test in the same process that logs would fail writing to it."""
    saved = structlog.get_config()
    handlers = list(logging.getLogger().handlers)
    yield
    structlog.configure(**saved)
    for handler in logging.getLogger().handlers:
        if handler not in handlers:
            logging.getLogger().removeHandler(handler)


@pytest.mark.usefixtures("restore_logging")
async def test_a_crash_is_logged_without_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    # Before: log.exception printed the exception's message, e.g. asyncpg's
    # "invalid input for query argument $1: '<the user's text>'", into the service log.
    from runtime.interceptors import RuntimeInterceptor

    configure_logging(service="test", level="INFO", fmt="json")
    structlog.configure(cache_logger_on_first_use=False)  # no logger keeps this test's stderr
    secret = marker()

    async def crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise ValueError(f"invalid input for query argument $1: {secret!r}")

    handler = grpc.method_handlers_generic_handler("test.Crash", {"Do": grpc.unary_unary_rpc_method_handler(crash)})
    server = grpc.aio.server(interceptors=[RuntimeInterceptor(None, frozenset({"/test.Crash/Do"}))])  # type: ignore[arg-type]
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Crash/Do")(b"")
            failure = await rpc_failure(call)
    finally:
        await server.stop(None)
    assert failure.code == grpc.StatusCode.INTERNAL and secret not in failure.message
    logged = capsys.readouterr()
    output = logged.out + logged.err
    assert "rpc_crashed" in output and "ValueError" in output
    assert secret not in output
