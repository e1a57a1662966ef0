"""Wiring of the agent service: pools, clients, the model chain and the compiled graph,
all created once at start and shared by every request."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import grpc

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.evals.v1 import evals_pb2_grpc
from runtime.clients import open_channel
from runtime.database import resolve_database_url
from runtime.llm import ModelChain
from runtime.server import Mount, ServiceApp
from runtime.service_identity import ServiceIdentity
from services.agent.approvals import ApprovalPolicy
from services.agent.checkpoints import Checkpoints
from services.agent.conversations import Conversations
from services.agent.erasure import UserErasure
from services.agent.executor import RunExecutor
from services.agent.graph import build_agent_graph
from services.agent.langfuse_tracing import LangfuseTracing
from services.agent.local_runs import RunSettings
from services.agent.long_term_memory import LongTermMemory
from services.agent.outbox import OutboxDelivery
from services.agent.pg_pool import dedicated_connection, ping_pool
from services.agent.run_store import RunStore
from services.agent.runs import Runs
from services.agent.server import AgentServicer
from services.agent.session_access import SessionAccess
from services.agent.settings import AgentSettings
from services.agent.system_prompt import SystemPrompt
from services.agent.tools.registry import build_tools


class AgentApp(ServiceApp):
    name = "agent"
    settings: AgentSettings

    def __init__(self, settings: AgentSettings) -> None:
        super().__init__(settings)
        self.checkpoints: Checkpoints | None = None
        self.sessions: SessionAccess | None = None
        self.memory: LongTermMemory | None = None
        self.identity: ServiceIdentity | None = None
        self.outbox: OutboxDelivery | None = None
        self._evals_channel: grpc.aio.Channel | None = None
        self.tracing: LangfuseTracing | None = None
        self.runs: Runs | None = None

    async def start(self) -> list[Mount]:
        s = self.settings
        url = await resolve_database_url(s)
        self.checkpoints = await Checkpoints.open(url, s)
        self.sessions = SessionAccess(s.sessions_addr, s.sessions_timeout_s)
        self.memory = LongTermMemory(s)
        self.identity = ServiceIdentity.from_settings(s, self.name)
        self._evals_channel = open_channel(s.evals_addr)
        self.outbox = OutboxDelivery(
            self.checkpoints.pool,
            self.identity,
            memory=self.memory.stub if s.memory_enabled else None,
            evals=evals_pb2_grpc.EvalServiceStub(self._evals_channel) if s.evals_enabled else None,
            timeout_s=s.handoff_timeout_s,
            max_backoff_s=s.handoff_max_backoff_s,
        )
        self.outbox.start()
        self.tracing = LangfuseTracing(s)
        tools = build_tools(
            web_search_enabled=s.web_search_enabled,
            web_search_max_results=s.web_search_max_results,
            web_search_timeout_s=s.web_search_timeout_s,
        )
        chain = ModelChain.from_settings(s, tools.openai_schemas(), service="agent")
        graph = build_agent_graph(
            chain=chain,
            tools=tools,
            prompt=SystemPrompt(s.agent_name),
            max_context_tokens=s.max_context_tokens,
            max_tool_rounds=s.max_tool_rounds,
            checkpointer=self.checkpoints.saver,
            max_tool_calls_per_round=s.max_tool_calls_per_round,
            policy=ApprovalPolicy.from_names(s.tools_require_approval),
            context_strategy=s.context_strategy,
        )
        store = RunStore(self.checkpoints.pool, lease_s=s.run_lease_s)
        executor = RunExecutor(
            graph=graph,
            chain=chain,
            memory=self.memory,
            identity=self.identity,
            outbox=self.outbox,
            tracing=self.tracing,
            max_tool_rounds=s.max_tool_rounds,
            traces_enabled=s.evals_enabled,
            store=store,
            approval_ttl_s=s.approval_ttl_s,
            end_retry_s=s.run_lease_s,
        )
        self.runs = Runs(
            store=store,
            executor=executor,
            sessions=self.sessions,
            checkpoints=self.checkpoints,
            listen=functools.partial(dedicated_connection, url),
            settings=RunSettings(
                lease_s=s.run_lease_s,
                events_ttl_s=s.run_events_ttl_s,
                flush_interval_s=s.run_events_flush_ms / 1000,
                max_active_runs_per_user=s.max_active_runs_per_user,
                max_running_runs=s.max_running_runs,
                max_message_chars=s.max_message_chars,
                checkpoints_keep=s.checkpoints_keep,
            ),
        )
        await self.runs.start()
        conversations = Conversations(self.sessions, self.checkpoints, self.runs)
        return [
            Mount(
                descriptor=agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
                add_to_server=agent_pb2_grpc.add_AgentServiceServicer_to_server,
                servicer=AgentServicer(self.runs, conversations, UserErasure(self.checkpoints.pool, self.runs)),
            )
        ]

    def database_ping(self) -> Callable[[], Awaitable[None]] | None:
        # The health probe's ping (runtime.server.DatabaseHealth): the checkpoint pool.
        return functools.partial(ping_pool, self.checkpoints.pool) if self.checkpoints is not None else None

    async def drain(self, grace_s: float) -> None:
        if self.runs is not None:
            await self.runs.drain(grace_s)

    async def stop(self) -> None:
        if self.runs is not None:
            await self.runs.close()
        # Hand-offs still waiting stay in the outbox: another replica (or this one after
        # its restart) delivers them.
        if self.outbox is not None:
            await self.outbox.close()
        if self.memory is not None:
            await self.memory.close()
        if self._evals_channel is not None:
            await self._evals_channel.close()
        if self.identity is not None:
            await self.identity.close()
        if self.tracing is not None:
            await self.tracing.close()
        if self.sessions is not None:
            await self.sessions.close()
        if self.checkpoints is not None:
            await self.checkpoints.close()
