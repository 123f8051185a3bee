from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cli import settings_table
from service.settings import Settings


def test_defaults_are_the_embedded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"SHARPWATCH_{name.upper()}", raising=False)
    settings = Settings()
    assert settings.is_sqlite
    assert settings.redis_url is None
    assert settings.workers == 1
    assert settings.binds_loopback


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARPWATCH_PORT", "9123")
    assert Settings().port == 9123


def test_several_workers_without_redis_fail_fast() -> None:
    with pytest.raises(ValidationError, match="SHARPWATCH_REDIS_URL"):
        Settings(workers=2)
    assert Settings(workers=2, redis_url="redis://localhost:6379/0").workers == 2


def test_prod_refuses_sqlite() -> None:
    with pytest.raises(ValidationError, match="PostgreSQL URL"):
        Settings(env="prod", database_url="sqlite:///x.db", auth=True)


def test_readme_configuration_table_is_generated_from_settings() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert settings_table() in readme
    documented = set(re.findall(r"`SHARPWATCH_([A-Z_]+)`", readme))
    assert {name.upper() for name in Settings.model_fields} <= documented


def test_public_url_must_be_an_http_address() -> None:
    assert Settings(public_url="https://sw.example.org/").public_url == "https://sw.example.org"
    with pytest.raises(ValidationError, match="public_url"):
        Settings(public_url="sw.example.org")
