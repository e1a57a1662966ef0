"""Langfuse traces of each turn's LangChain runs, only when both keys are set.

One client and one callback handler per process; the session and user ride on each
run's metadata. Flushed once at shutdown, never per request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.logging import get_logger
from services.agent.settings import AgentSettings

log = get_logger(__name__)


class LangfuseTracing:
    def __init__(self, settings: AgentSettings) -> None:
        self._client: Any = None
        self._callbacks: list[Any] = []
        if settings.langfuse_enabled:
            from langfuse import Langfuse
            from langfuse.langchain import CallbackHandler

            assert settings.langfuse_public_key is not None and settings.langfuse_secret_key is not None
            public_key = settings.langfuse_public_key.get_secret_value()
            self._client = Langfuse(
                public_key=public_key,
                secret_key=settings.langfuse_secret_key.get_secret_value(),
                host=settings.langfuse_host,
            )
            self._callbacks = [CallbackHandler(public_key=public_key)]
            log.info("langfuse_enabled", host=settings.langfuse_host)

    def run_config(self, *, session_id: str, user_id: str) -> dict[str, Any]:
        """The part of a run's config that puts it on a Langfuse trace (nothing when disabled)."""
        if not self._callbacks:
            return {}
        return {
            "callbacks": self._callbacks,
            "metadata": {"langfuse_session_id": session_id, "langfuse_user_id": user_id},
        }

    async def close(self) -> None:
        if self._client is not None:
            # flush() blocks on HTTP; keep it off the event loop.
            await asyncio.to_thread(self._client.shutdown)
