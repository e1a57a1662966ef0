"""Wiring of the memory service: database, embedder, LLM, servicer."""

from __future__ import annotations

from pathlib import Path

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from runtime.database import Database, open_database
from runtime.llm import LLMClient
from runtime.server import Mount, ServiceApp
from runtime.settings import ConfigurationError
from services.memory.embeddings import Embedder, open_embedder
from services.memory.extraction import FactExtractor
from services.memory.memories import Memories
from services.memory.memory_rows import SearchTuning
from services.memory.resolution import Resolver
from services.memory.server import MemoryServicer
from services.memory.settings import MemorySettings
from services.memory.store import MemoryStore, register_vector_codec
from services.memory.sweeper import MemorySweeper

MIGRATIONS = Path(__file__).parent / "migrations"


def search_tuning(settings: MemorySettings) -> SearchTuning:
    return SearchTuning(
        exact_max_rows=settings.exact_search_max_rows,
        ef_search=settings.hnsw_ef_search,
        iterative_scan=settings.hnsw_iterative_scan,
        max_scan_tuples=settings.hnsw_max_scan_tuples,
    )


async def open_memory_store(settings: MemorySettings) -> tuple[Database, MemoryStore]:
    """The migrated database with pgvector's codec on every connection; shared with benchmarks."""
    database = await open_database(settings, schema="memory", migrations=MIGRATIONS)
    register_vector_codec(database.engine)
    # Connections pooled during the migration predate the codec (and maybe the extension).
    await database.engine.dispose()
    store = MemoryStore(database.engine, search_tuning(settings))
    stored_dim = await store.embedding_dim()
    if stored_dim != settings.embedding_dim:
        await database.close()
        raise ConfigurationError(
            f"EMBEDDING_DIM={settings.embedding_dim} but memory.memories.embedding is vector({stored_dim}); "
            "use the dimension the table was created with, or migrate and re-embed the memories"
        )
    return database, store


class MemoryApp(ServiceApp):
    name = "memory"
    settings: MemorySettings

    def __init__(self, settings: MemorySettings) -> None:
        super().__init__(settings)
        self.database: Database | None = None
        self.embedder: Embedder | None = None
        self.sweeper: MemorySweeper | None = None

    async def start(self) -> list[Mount]:
        s = self.settings
        self.database, store = await open_memory_store(s)
        self.embedder = await open_embedder(s)
        # Temperature 0: extraction and resolution are classification, not prose.
        llm = LLMClient(s, service="memory", temperature=0).chain_for(s.extraction_model)
        resolver = Resolver(llm, self.embedder, dedup_threshold=s.dedup_threshold, neighbours=s.resolution_neighbours)
        memories = Memories(
            store,
            self.embedder,
            FactExtractor(llm),
            resolver,
            dedup_threshold=s.dedup_threshold,
            default_search_limit=s.search_default_limit,
            max_memories_per_user=s.max_memories_per_user,
            default_min_score=s.memory_min_score,
        )
        self.sweeper = MemorySweeper(
            store,
            interval_s=s.memory_sweep_interval_s,
            batch=s.memory_sweep_batch,
            key_ttl_s=s.memory_idempotency_ttl_s,
        )
        self.sweeper.start()
        return [
            Mount(
                descriptor=memory_pb2.DESCRIPTOR.services_by_name["MemoryService"],
                add_to_server=memory_pb2_grpc.add_MemoryServiceServicer_to_server,
                servicer=MemoryServicer(memories),
            )
        ]

    async def stop(self) -> None:
        if self.sweeper is not None:
            await self.sweeper.close()
        if self.embedder is not None:
            await self.embedder.close()
        if self.database is not None:
            await self.database.close()
