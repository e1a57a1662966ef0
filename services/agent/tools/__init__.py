"""The agent's tools: one module per tool, gathered by `registry.build_tools`."""
