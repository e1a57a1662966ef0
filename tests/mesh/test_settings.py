"""Settings: env files by APP_ENV, clear start-up errors, production refuses dev defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meshctl.processes import ROOT
from runtime.settings import SettingsError, load_settings
from services.auth.settings import DEV_SIGNING_KEY_SECRET, AuthSettings


def test_production_refuses_development_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SIGNING_KEY_SECRET", raising=False)
    monkeypatch.setenv("BCRYPT_ROUNDS", "4")
    with pytest.raises(SettingsError) as refused:
        load_settings(AuthSettings)
    message = str(refused.value)
    assert "DATABASE_URL is required" in message
    assert "SIGNING_KEY_SECRET must be set" in message
    assert "BCRYPT_ROUNDS must be at least 12" in message
    assert DEV_SIGNING_KEY_SECRET not in message


def test_production_accepts_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://agentmesh:secret@db:5432/agentmesh")
    monkeypatch.setenv("SIGNING_KEY_SECRET", "s" * 40)
    monkeypatch.setenv("SERVICE_CREDENTIALS", "agent=a-real-agent-credential,evals=sha256:" + "0" * 64)
    settings = load_settings(AuthSettings)
    assert settings.is_production
    assert settings.effective_log_format == "json"
    assert settings.bcrypt_rounds == 12


def test_malformed_settings_name_the_setting_not_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_PORT", "seventy")
    monkeypatch.setenv("ACCESS_TOKEN_TTL_S", "5")
    with pytest.raises(SettingsError) as refused:
        load_settings(AuthSettings)
    message = str(refused.value)
    assert "GRPC_PORT" in message
    assert "ACCESS_TOKEN_TTL_S" in message
    assert "seventy" not in message


def test_env_file_of_the_app_env_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr("runtime.settings.ROOT", tmp_path)
    # Staging refuses the development signing secret and service credentials (issue 11).
    (tmp_path / ".env.staging").write_text(
        "ACCESS_TOKEN_TTL_S=600\nLOGIN_MAX_FAILURES=7\nSIGNING_KEY_SECRET=" + "s" * 40 + "\n"
        "SERVICE_CREDENTIALS=agent=staging-agent-credential\n"
    )
    (tmp_path / ".env.staging.local").write_text("ACCESS_TOKEN_TTL_S=300\n")
    monkeypatch.setenv("APP_ENV", "staging")
    monkeypatch.delenv("ACCESS_TOKEN_TTL_S", raising=False)
    for name in ("LOGIN_MAX_FAILURES", "SIGNING_KEY_SECRET", "SERVICE_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(AuthSettings)
    assert settings.access_token_ttl_s == 300
    assert settings.login_max_failures == 7
    monkeypatch.setenv("ACCESS_TOKEN_TTL_S", "120")
    assert load_settings(AuthSettings).access_token_ttl_s == 120


def test_a_service_with_bad_settings_exits_with_a_clear_message() -> None:
    env = {**os.environ, "APP_ENV": "production", "SIGNING_KEY_SECRET": ""}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "services.auth"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "unsafe settings for APP_ENV=production" in result.stderr
    assert "Traceback" not in result.stderr
