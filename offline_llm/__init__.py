"""An offline, OpenAI-compatible LLM server so the mesh runs and is tested without a real model.

Start it with `python -m offline_llm`, or in-process with `serve_in_process(settings)`; build the
ASGI app alone with `create_app(settings)`. Its models are owned by "agentmesh-offline" and its
answers say they come from an offline model.
"""

from offline_llm.app import create_app
from offline_llm.server import RunningServer, serve_forever, serve_in_process
from offline_llm.settings import OfflineLLMSettings

__all__ = ["OfflineLLMSettings", "RunningServer", "create_app", "serve_forever", "serve_in_process"]
