"""`python -m services.memory` serves the memory service."""

from runtime.entrypoint import exit_on_configuration_error
from runtime.server import run
from runtime.settings import load_settings
from services.memory.app import MemoryApp
from services.memory.settings import MemorySettings

if __name__ == "__main__":
    exit_on_configuration_error(lambda: run(MemoryApp(load_settings(MemorySettings))))
