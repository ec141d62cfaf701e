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
        description="Directories dataset files may be read from. Empty: `[<home>/data]`.",
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
    # Per-job limits, checked at submission (docs/limits.md); the built-in recipes fit them.
    max_items: int = Field(
        default=50_000, ge=1,
        description="Items one job may use: dataset n_eval + n_train, and inline items sent.",
    )  # fmt: skip
    max_prompt_tokens: int = Field(
        default=8192, ge=8,
        description="Largest extraction.max_length and SFT max_length (tokens per prompt).",
    )  # fmt: skip
    max_layers: int = Field(
        default=256, ge=1, description="Most layer indices an explicit extraction.layers lists."
    )
    max_conditions: int = Field(
        default=128, ge=1, description="Most conditions in a job, counted after k/seed sweeps."
    )
    max_checkpoints: int = Field(
        default=256, ge=0, description="Most SFT checkpoints a job analyses (after sweeps)."
    )
    max_train_steps: int = Field(
        default=100_000, ge=0,
        description="Most optimiser steps of all SFT conditions of a job together (after sweeps).",
    )  # fmt: skip
    # Request bodies (job specs carry inline datasets).
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Largest request body in bytes."
    )
    max_json_depth: int = Field(
        default=32, ge=4, le=512, description="Deepest nesting of arrays/objects in a JSON body."
    )
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024,
        description="Largest dataset file `POST /v1/datasets` accepts, in bytes.",
    )  # fmt: skip
    hub_downloads: bool = Field(
        default=False,
        description=(
            "Let workers download Hugging Face datasets a job names (source 'hf'). Off: only "
            "the worker's HF cache and save_to_disk directories under data_roots are read."
        ),
    )
    # Which models jobs may name.
    model_allowlist: list[str] = Field(
        default_factory=list,
        description=(
            "Glob patterns of hub ids jobs may use, e.g. ['HuggingFaceTB/*']. Empty: no hub "
            "ids. Built-in names need no entry; local directories must be under model_roots."
        ),
    )
    # API rate limit per API key (per client IP without a valid key); in-process buckets.
    rate_limit_per_s: float = Field(
        default=20.0, ge=0, description="Requests per second refilled per key; 0 disables."
    )
    rate_limit_burst: int = Field(
        default=60, ge=1, description="Requests a key may send at once (bucket size)."
    )
    # Worker memory.
    graph_cache_mb: int = Field(
        default=1024, ge=0,
        description=(
            "kNN graphs a worker keeps during a job so that comparisons reuse the metrics' "
            "graphs (MiB; 0: recompute them)."
        ),
    )  # fmt: skip
    # Fault tolerance (docs/faults.md): worker leases, retries, the reconciler, time limits.
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, description="How often a worker renews its lease on a running job."
    )
    lease_timeout_s: float = Field(
        default=45.0, gt=0,
        description="A running job whose lease was not renewed for this long is taken over.",
    )  # fmt: skip
    max_attempts: int = Field(
        default=3, ge=1,
        description="Starts a job gets; once that many ended with a dead worker it fails.",
    )  # fmt: skip
    retry_delay_s: float = Field(
        default=10.0, ge=0,
        description="Delay before a job that hit a transient error (database, network) reruns.",
    )  # fmt: skip
    quota_retry_s: float = Field(
        default=15.0, gt=0,
        description="Delay before a job held back by its owner's running quota is tried again.",
    )  # fmt: skip
    reconcile_interval_s: float = Field(
        default=10.0, ge=0,
        description="How often the API server's reconciler runs; 0 disables it.",
    )  # fmt: skip
    requeue_grace_s: float = Field(
        default=30.0, gt=0,
        description="A queued job whose task message is missing this long is re-enqueued.",
    )  # fmt: skip
    max_job_seconds: int = Field(
        default=7 * 24 * 3600, ge=1, le=365 * 24 * 3600,
        description="Longest wall-clock time_limit_s a job may ask for (and the default).",
    )  # fmt: skip
    artifact_temp_max_age_s: float = Field(
        default=6 * 3600.0, ge=0,
        description="Temporary artifact files older than this are left by dead writers and "
        "removed by the reconciler.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> Settings:
        # A lease must survive a missed heartbeat or two (a slow database round trip), or a
        # live worker's job would be taken over and run twice.
        if self.lease_timeout_s < 3 * self.heartbeat_interval_s:
            raise ValueError(
                f"lease_timeout_s ({self.lease_timeout_s}) must be at least 3 x "
                f"heartbeat_interval_s ({self.heartbeat_interval_s})"
            )
        return self

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
