"""Locust users for agentmesh: the seed's flow over HTTP through the gateway, and the same
turns over gRPC straight to the services with the generated stubs.

    locust -f loadtest/locustfile.py --config loadtest/locust.conf --host http://127.0.0.1:8080
    locust -f loadtest/locustfile.py ... GrpcChatUser          # one user class only

Each user registers its own account on start (users are made on the fly), logs in, creates a
session, then loops over a unary chat and a streamed chat with think time. Streams are two
entries: `(ttft)`, the time to the first token event, fired by hand, and `(full)`, the whole
stream. When Locust quits, the SLOs in `loadtest/slo.yaml` are checked and a miss exits 1.
"""

from __future__ import annotations

# grpc must be patched for gevent before any channel exists (Locust's gRPC example).
import grpc
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from locust import HttpUser, User, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.runners import WorkerRunner  # noqa: E402

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402
from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc  # noqa: E402
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc  # noqa: E402
from loadtest.slo import DEFAULT_SLO_FILE, enforce_slo  # noqa: E402

PASSWORD = "Locust-Pa55word!"
PROMPTS = [
    "Explain quantum computing briefly.",
    "Tell me something about the history of tea.",
    "I like hiking in the mountains on weekends.",
    "What should I read to learn about gardening?",
]
CHAT_NAME = "/v1/sessions/[id]:chat"
STREAM_NAME = "/v1/sessions/[id]:stream"
RESUME_NAME = "/v1/sessions/[id]/runs/[id]:stream (resume)"
# The resuming user drops its stream after this many events, then resumes it.
DROP_AFTER_EVENTS = 3
GRPC_STREAM_METHOD = "/agentmesh.agent.v1.AgentService/StreamChat"
TURN_TIMEOUT_S = 120.0


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("agentmesh")
    group.add_argument("--auth-addr", default=os.environ.get("AUTH_ADDR", "127.0.0.1:50051"), help="gRPC auth")
    group.add_argument("--sessions-addr", default=os.environ.get("SESSIONS_ADDR", "127.0.0.1:50052"))
    group.add_argument("--agent-addr", default=os.environ.get("AGENT_ADDR", "127.0.0.1:50053"))
    group.add_argument("--think-min", type=float, default=1.0, help="think time between turns, seconds")
    group.add_argument("--think-max", type=float, default=3.0)
    group.add_argument("--slo-file", default=str(DEFAULT_SLO_FILE), help="SLOs checked when Locust quits")


def _option(environment: Environment, name: str, default: Any) -> Any:
    options = environment.parsed_options
    return getattr(options, name, default) if options is not None else default


def _think(user: User) -> float:
    low = float(_option(user.environment, "think_min", 1.0))
    high = float(_option(user.environment, "think_max", 3.0))
    return random.uniform(low, max(low, high))


def _new_email() -> str:
    return f"locust-{uuid.uuid4().hex[:16]}@example.com"


def fire(
    environment: Environment, request_type: str, name: str, started: float, exception: BaseException | None = None
) -> None:
    environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        response=None,
        context={},
        exception=exception,
    )


class StreamError(Exception):
    pass


class HttpChatUser(HttpUser):
    """The seed's flow through the gateway: register once, log in, create a session, chat."""

    weight = 3
    wait_time = _think

    def on_start(self) -> None:
        self.email = _new_email()
        self.client.post("/v1/auth/register", json={"email": self.email, "password": PASSWORD})
        # The OAuth2 password form, as the seed's clients send it.
        form = {"username": self.email, "password": PASSWORD, "grant_type": "password"}
        with self.client.post("/v1/auth/login", data=form, catch_response=True) as response:
            token = response.json().get("access_token") if response.status_code == 200 else None
            if not token:
                response.failure(f"login answered {response.status_code}")
                return
        self.headers = {"Authorization": f"Bearer {token}"}
        with self.client.post("/v1/sessions", json={}, headers=self.headers, catch_response=True) as response:
            self.session_id = (response.json().get("session") or {}).get("session_id", "")
            if not self.session_id:
                response.failure("no session_id in the answer")

    def _ready(self) -> bool:
        return bool(getattr(self, "session_id", ""))

    @task
    def chat(self) -> None:
        if not self._ready():
            return
        body = {"message": {"role": "user", "content": random.choice(PROMPTS)}}
        with self.client.post(
            f"/v1/sessions/{self.session_id}:chat",
            json=body,
            headers=self.headers,
            name=CHAT_NAME,
            catch_response=True,
            timeout=TURN_TIMEOUT_S,
        ) as response:
            if response.status_code != 200 or not response.json().get("messages"):
                response.failure(f"chat answered {response.status_code}: {response.text[:200]}")

    @task
    def stream(self) -> None:
        if not self._ready():
            return
        body = {"message": {"role": "user", "content": random.choice(PROMPTS)}}
        headers = {**self.headers, "Accept": "text/event-stream"}
        started = time.perf_counter()
        first_token = False
        with self.client.post(
            f"/v1/sessions/{self.session_id}:stream",
            json=body,
            headers=headers,
            name=f"{STREAM_NAME} (full)",
            stream=True,
            catch_response=True,
            timeout=TURN_TIMEOUT_S,
        ) as response:
            problem = None if response.status_code == 200 else f"stream answered {response.status_code}"
            completed = False
            event_name = ""
            for raw in response.iter_lines() if problem is None else ():
                line = raw.decode() if isinstance(raw, bytes) else raw
                if line.startswith("event:"):
                    event_name = line[6:].strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event_name == "error" or "error" in event:
                    problem = f"stream error event: {line[:200]}"
                    break
                if "token" in event and not first_token:
                    first_token = True
                    fire(self.environment, "SSE", f"{STREAM_NAME} (ttft)", started)
                if "completed" in event:
                    completed = True
                    break
            if problem is None and not completed:
                problem = "stream ended without a completed event"
            # The full entry is the whole stream, not just the response headers.
            response.request_meta["response_time"] = (time.perf_counter() - started) * 1000
            if problem is not None:
                response.failure(problem)
        if problem is not None and not first_token:
            fire(self.environment, "SSE", f"{STREAM_NAME} (ttft)", started, StreamError(problem))


def _sse_events(lines: Iterator[Any]) -> Iterator[tuple[str, str, dict]]:
    """(event name, id, data) per Server-Sent Event of a response's lines."""
    name, event_id = "message", ""
    for raw in lines:
        line = raw.decode() if isinstance(raw, bytes) else raw
        if not line:
            name, event_id = "message", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            yield name, event_id, json.loads(line[5:])


class HttpResumingUser(HttpChatUser):
    """A flaky mobile network: starts a streamed turn, drops the connection after a few
    events, and resumes the run with `Last-Event-ID` (the durable-runs path), its own entry."""

    weight = 1

    @task
    def chat(self) -> None:
        return None  # this user only streams, drops and resumes

    @task
    def stream(self) -> None:
        if not self._ready():
            return
        body = {"message": {"role": "user", "content": random.choice(PROMPTS)}}
        headers = {**self.headers, "Accept": "text/event-stream"}
        run_id, last_id = "", ""
        with self.client.post(
            f"/v1/sessions/{self.session_id}:stream",
            json=body,
            headers=headers,
            name=f"{STREAM_NAME} (dropped)",
            stream=True,
            catch_response=True,
            timeout=TURN_TIMEOUT_S,
        ) as response:
            seen = 0
            for _name, event_id, event in _sse_events(response.iter_lines()) if response.status_code == 200 else ():
                run_id, last_id, seen = event.get("run_id", run_id), event_id, seen + 1
                if seen >= DROP_AFTER_EVENTS or "completed" in event:
                    break  # the connection is dropped here
            if not run_id:
                response.failure(f"stream answered {response.status_code} with no run id")
                return
        started = time.perf_counter()
        with self.client.get(
            f"/v1/sessions/{self.session_id}/runs/{run_id}:stream",
            headers={**headers, "Last-Event-ID": last_id},
            name=RESUME_NAME,
            stream=True,
            catch_response=True,
            timeout=TURN_TIMEOUT_S,
        ) as resumed:
            expected = int(last_id or 0) + 1
            problem, done = None, False
            for name, event_id, event in _sse_events(resumed.iter_lines()) if resumed.status_code == 200 else ():
                if name == "error" or "error" in event:
                    problem = f"resumed stream error: {event}"
                    break
                if int(event_id or 0) != expected:
                    problem = f"event {event_id} after {expected - 1}: an event was lost or repeated"
                    break
                expected += 1
                if "completed" in event:
                    done = True
                    break
            if resumed.status_code != 200:
                problem = f"resume answered {resumed.status_code}"
            # A turn that completed before the drop has nothing left to resume: that is fine.
            elif not done and problem is None and expected > int(last_id or 0) + 1:
                problem = "resumed stream ended without a completed event"
            resumed.request_meta["response_time"] = (time.perf_counter() - started) * 1000
            if problem is not None:
                resumed.failure(problem)


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Fires one Locust request event per RPC; for a stream, when the stream ends."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        started = time.perf_counter()
        call = continuation(details, request)
        exception: BaseException | None = None
        length = 0
        try:
            length = call.result().ByteSize()
        except grpc.RpcError as exc:
            exception = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=details.method,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            response=call,
            context={},
            exception=exception,
        )
        return call

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        started = time.perf_counter()
        responses = continuation(details, request)

        def timed() -> Iterator[Any]:
            exception: BaseException | None = None
            length = 0
            try:
                for message in responses:
                    length += message.ByteSize()
                    if message.WhichOneof("event") == "error":
                        exception = StreamError(message.error.message)
                    yield message
            except grpc.RpcError as exc:
                exception = exc
                raise
            finally:
                self.environment.events.request.fire(
                    request_type="grpc",
                    name=details.method,
                    response_time=(time.perf_counter() - started) * 1000,
                    response_length=length,
                    response=None,
                    context={},
                    exception=exception,
                )

        return timed()


class GrpcChatUser(User):
    """The same flow straight to the services over gRPC with the generated stubs."""

    weight = 1
    wait_time = _think

    def on_start(self) -> None:
        interceptor = LocustInterceptor(self.environment)
        self.channels = [
            grpc.intercept_channel(grpc.insecure_channel(_option(self.environment, name, default)), interceptor)
            for name, default in (
                ("auth_addr", os.environ.get("AUTH_ADDR", "127.0.0.1:50051")),
                ("sessions_addr", os.environ.get("SESSIONS_ADDR", "127.0.0.1:50052")),
                ("agent_addr", os.environ.get("AGENT_ADDR", "127.0.0.1:50053")),
            )
        ]
        auth = auth_pb2_grpc.AuthServiceStub(self.channels[0])
        self.sessions = sessions_pb2_grpc.SessionServiceStub(self.channels[1])
        self.agent = agent_pb2_grpc.AgentServiceStub(self.channels[2])
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.session_id = ""
        email = _new_email()
        try:
            auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD), timeout=30)
            login = auth.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD), timeout=30)
            self.metadata = (("authorization", f"Bearer {login.access_token}"),)
            created = self.sessions.CreateSession(
                sessions_pb2.CreateSessionRequest(), metadata=self.metadata, timeout=10
            )
            self.session_id = created.session.session_id
        except grpc.RpcError:
            return  # already counted as a failure by the interceptor

    def on_stop(self) -> None:
        for channel in getattr(self, "channels", []):
            channel.close()

    def _message(self) -> agent_pb2.Message:
        return agent_pb2.Message(role="user", content=random.choice(PROMPTS))

    @task
    def chat(self) -> None:
        if not self.session_id:
            return
        request = agent_pb2.ChatRequest(session_id=self.session_id, message=self._message())
        with contextlib.suppress(grpc.RpcError):  # counted by the interceptor
            self.agent.Chat(request, metadata=self.metadata, timeout=TURN_TIMEOUT_S)

    @task
    def stream(self) -> None:
        if not self.session_id:
            return
        request = agent_pb2.StreamChatRequest(session_id=self.session_id, message=self._message())
        started = time.perf_counter()
        first_token = False
        try:
            for event in self.agent.StreamChat(request, metadata=self.metadata, timeout=TURN_TIMEOUT_S):
                if event.WhichOneof("event") == "token" and not first_token:
                    first_token = True
                    fire(self.environment, "grpc", f"{GRPC_STREAM_METHOD} (ttft)", started)
        except grpc.RpcError as exc:
            if not first_token:
                fire(self.environment, "grpc", f"{GRPC_STREAM_METHOD} (ttft)", started, exc)
            return
        if not first_token:
            fire(self.environment, "grpc", f"{GRPC_STREAM_METHOD} (ttft)", started, StreamError("no token event"))


@events.quitting.add_listener
def _check_slos(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return  # the master checks the aggregated stats
    enforce_slo(environment, Path(_option(environment, "slo_file", str(DEFAULT_SLO_FILE))))
