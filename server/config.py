"""Service settings, read from `REPRLAB_*` environment variables (pydantic-settings).

Everything derives from `REPRLAB_HOME` unless set explicitly: the SQLite database, the artifact
directory and the default data root live under it. List settings (`REPRLAB_DATA_ROOTS`,
`REPRLAB_MODEL_ROOTS`) are JSON lists in the environment, e.g. `'["/data/a", "/data/b"]'`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration shared by the API server, the workers and the CLI."""

    model_config = SettingsConfigDict(env_prefix="REPRLAB_", extra="ignore")

    home: Path = Field(
        default=Path("~/.reprlab"),
        description="Root of the default database, artifact store and data root.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL. Empty: the SQLite file `<home>/reprlab.db`.",
    )
    broker_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Celery broker (Redis) URL."
    )
    artifact_url: str = Field(
        default="",
        description="fsspec URL of the artifact store. Empty: `file://<home>/artifacts`.",
    )
    model_cache: Path = Field(
        default=Path("~/.cache/reprlab/models"),
        description="Where built-in models are converted and cached.",
    )
    data_roots: list[Path] = Field(
        default_factory=list,
        description="Directories JSONL datasets may be read from. Empty: `[<home>/data]`.",
    )
    model_roots: list[Path] = Field(
        default_factory=list, description="Directories local models may be loaded from."
    )
    host: str = Field(default="127.0.0.1", description="API server bind address.")
    port: int = Field(default=8000, ge=1, le=65535, description="API server port.")
    max_running_jobs: int = Field(
        default=2, ge=1, description="Jobs one user may have running at once (per-user override)."
    )
    max_queued_jobs: int = Field(
        default=20, ge=1, description="Jobs one user may have waiting (per-user override)."
    )

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self.home = self.home.expanduser().absolute()
        self.model_cache = self.model_cache.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'reprlab.db'}"
        if not self.artifact_url:
            self.artifact_url = f"file://{self.home / 'artifacts'}"
        if not self.data_roots:
            self.data_roots = [self.home / "data"]
        self.data_roots = [p.expanduser() for p in self.data_roots]
        self.model_roots = [p.expanduser() for p in self.model_roots]
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
