"""`python -m offline_llm`: serve on OFFLINE_LLM_HOST:OFFLINE_LLM_PORT (default 127.0.0.1:8100)."""

from __future__ import annotations

import asyncio

from offline_llm.server import serve_forever
from offline_llm.settings import OfflineLLMSettings


def main() -> None:
    asyncio.run(serve_forever(OfflineLLMSettings()))


if __name__ == "__main__":
    main()
