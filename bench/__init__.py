"""Benchmarks of the mesh itself against the offline LLM, whose latency is known: `python -m bench`."""
