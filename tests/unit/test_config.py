"""Settings from `REPRLAB_*` environment variables, and the values derived from the home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprlab.server.config import Settings, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["HOME", "DATABASE_URL", "BROKER_URL", "ARTIFACT_URL", "MODEL_CACHE",
                 "DATA_ROOTS", "MODEL_ROOTS", "HOST", "PORT"]:  # fmt: skip
        monkeypatch.delenv(f"REPRLAB_{name}", raising=False)


def test_defaults_derive_from_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REPRLAB_HOME", str(tmp_path / "home"))
    s = Settings()
    assert s.home == tmp_path / "home"
    assert s.database_url == f"sqlite:///{tmp_path}/home/reprlab.db"
    assert s.artifact_url == f"file://{tmp_path}/home/artifacts"
    assert s.data_roots == [tmp_path / "home" / "data"]
    assert s.model_roots == []
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert (s.host, s.port) == ("127.0.0.1", 8000)


def test_home_defaults_to_dot_reprlab_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.home == Path.home() / ".reprlab"
    assert s.model_cache == Path.home() / ".cache/reprlab/models"


def test_explicit_values_and_json_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "REPRLAB_HOME": str(tmp_path),
        "REPRLAB_DATABASE_URL": "postgresql+psycopg://u@db:5432/reprlab",
        "REPRLAB_BROKER_URL": "redis://redis:6379/3",
        "REPRLAB_ARTIFACT_URL": "memory://artifacts",
        "REPRLAB_MODEL_CACHE": str(tmp_path / "models"),
        "REPRLAB_DATA_ROOTS": json.dumps([str(tmp_path / "d1"), "~/d2"]),
        "REPRLAB_MODEL_ROOTS": json.dumps([str(tmp_path / "m")]),
        "REPRLAB_HOST": "0.0.0.0",
        "REPRLAB_PORT": "9001",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.database_url == env["REPRLAB_DATABASE_URL"]
    assert s.broker_url == env["REPRLAB_BROKER_URL"]
    assert s.artifact_url == "memory://artifacts"
    assert s.model_cache == tmp_path / "models"
    assert s.data_roots == [tmp_path / "d1", Path.home() / "d2"]
    assert s.model_roots == [tmp_path / "m"]
    assert (s.host, s.port) == ("0.0.0.0", 9001)


def test_invalid_env_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRLAB_PORT", "not-a-port")
    with pytest.raises(ValueError, match="port"):
        Settings()


def test_get_settings_reads_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("REPRLAB_HOME", str(tmp_path / "a"))
        first = get_settings()
        monkeypatch.setenv("REPRLAB_HOME", str(tmp_path / "b"))
        assert get_settings() is first and first.home == tmp_path / "a"
    finally:
        get_settings.cache_clear()
