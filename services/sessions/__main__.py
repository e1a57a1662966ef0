"""`python -m services.sessions` serves the sessions service."""

from runtime.entrypoint import exit_on_configuration_error
from runtime.server import run
from runtime.settings import load_settings
from services.sessions.app import SessionsApp
from services.sessions.settings import SessionsSettings

if __name__ == "__main__":
    exit_on_configuration_error(lambda: run(SessionsApp(load_settings(SessionsSettings))))
