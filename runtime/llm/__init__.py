"""The one LLM client of the mesh (agent, memory, evals): a `ChatOpenAI` per model, retries
with backoff and full jitter honouring `retry-after`, a fallback chain, a circuit breaker per
model, structured output (`complete_json`) and streaming that never retries once text reached
the client. Metrics are `<service>_llm_*` (e.g. `agent_llm_retries_total`), one set per service.
"""

from runtime.llm.chain import LLMClient, LLMUnavailable, ModelAnswer, ModelChain
from runtime.llm.retry import Backoff, MalformedAnswer

__all__ = ["Backoff", "LLMClient", "LLMUnavailable", "MalformedAnswer", "ModelAnswer", "ModelChain"]
