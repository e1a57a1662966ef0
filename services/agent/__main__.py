"""`python -m services.agent` serves the agent service."""

from services.agent.app import AgentApp
from services.agent.settings import AgentSettings
from services.common.server import run
from services.common.settings import load_settings

if __name__ == "__main__":
    run(AgentApp(load_settings(AgentSettings)))
