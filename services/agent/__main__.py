"""`python -m services.agent` serves the agent service."""

from runtime.entrypoint import exit_on_configuration_error
from runtime.server import run
from runtime.settings import load_settings
from services.agent.app import AgentApp
from services.agent.settings import AgentSettings

if __name__ == "__main__":
    exit_on_configuration_error(lambda: run(AgentApp(load_settings(AgentSettings))))
