"""Wiring of the evals service: database, metric catalog, judge, score sinks, servicer."""

from __future__ import annotations

from pathlib import Path

from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from runtime.database import Database, open_database
from runtime.llm import LLMClient
from runtime.logging import get_logger
from runtime.server import Mount, ServiceApp
from runtime.settings import ConfigurationError
from services.evals.export import LangfuseScoreSink, NoScoreSink, ScoreSink
from services.evals.judge import Judge
from services.evals.langfuse_source import LangfuseTraceImporter
from services.evals.metrics_catalog import MetricCatalog, MetricFileError
from services.evals.runner import EvaluationRunner
from services.evals.server import EvalServicer
from services.evals.settings import EvalsSettings
from services.evals.store import EvalStore

log = get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


class EvalsApp(ServiceApp):
    name = "evals"
    settings: EvalsSettings

    def __init__(self, settings: EvalsSettings) -> None:
        super().__init__(settings)
        self.database: Database | None = None
        self.sink: ScoreSink = NoScoreSink()

    async def start(self) -> list[Mount]:
        s = self.settings
        try:
            catalog = MetricCatalog.load(s.evals_metrics_dir)
        except MetricFileError as exc:
            raise ConfigurationError(f"cannot load metrics: {exc}") from None
        self.database = await open_database(s, schema="evals", migrations=MIGRATIONS)
        store = EvalStore(self.database.engine)
        # LLM_MAX_ATTEMPTS, LLM_BACKOFF_* and the circuit breakers, as in every service; a
        # malformed judgement is retried like a failed call. Temperature 0: grading, not prose.
        judge = Judge(LLMClient(s, service="evals", temperature=0), judge_model=s.judge_model)
        importer = None
        if s.langfuse_enabled:
            langfuse = self._langfuse_client()
            self.sink = LangfuseScoreSink(langfuse)
            if s.evals_trace_source == "langfuse":
                importer = LangfuseTraceImporter(
                    langfuse, store, lookback_h=s.evals_langfuse_lookback_h, limit=s.evals_langfuse_import_limit
                )
        elif s.evals_trace_source == "langfuse":
            raise ConfigurationError("EVALS_TRACE_SOURCE=langfuse needs LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY")
        runner = EvaluationRunner(
            store,
            catalog,
            judge,
            self.sink,
            concurrency=s.judge_concurrency,
            claim_timeout_s=s.evals_claim_timeout_s,
            importer=importer,
        )
        log.info(
            "metrics_loaded", metrics=[m.name for m in catalog], judge_model=s.judge_model or ",".join(s.llm_models)
        )
        return [
            Mount(
                descriptor=evals_pb2.DESCRIPTOR.services_by_name["EvalService"],
                add_to_server=evals_pb2_grpc.add_EvalServiceServicer_to_server,
                servicer=EvalServicer(store, catalog, runner),
            )
        ]

    def _langfuse_client(self):
        from langfuse import Langfuse

        s = self.settings
        assert s.langfuse_public_key is not None and s.langfuse_secret_key is not None
        # tracing_enabled must stay on: the SDK drops scores when tracing is off.
        return Langfuse(
            public_key=s.langfuse_public_key.get_secret_value(),
            secret_key=s.langfuse_secret_key.get_secret_value(),
            host=s.langfuse_host,
        )

    async def stop(self) -> None:
        await self.sink.close()
        if self.database is not None:
            await self.database.close()
