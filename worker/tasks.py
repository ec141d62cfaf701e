"""Celery tasks: thin wrappers that take a job id and call one function."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.orm import Session, sessionmaker

from reprlab.server.config import Settings, get_settings
from reprlab.server.db import init_db, make_engine, session_factory
from reprlab.server.leases import LeasePolicy
from reprlab.server.storage import ArtifactStore
from reprlab.worker.celery_app import QUEUE, RUN_JOB_TASK, app
from reprlab.worker.models import ModelCache
from reprlab.worker.runner import RunPolicy, run_stored_job


@lru_cache(maxsize=1)
def _runtime() -> tuple[sessionmaker[Session], ArtifactStore, ModelCache]:
    """Per-process resources, created on the first task (not at import, not in a parent)."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    init_db(engine)
    return session_factory(engine), ArtifactStore(settings.artifact_url), ModelCache()


def run_policy(settings: Settings) -> RunPolicy:
    """The worker's leases, running quota and retry delays, from the settings."""
    return RunPolicy(
        lease=LeasePolicy(lease_timeout_s=settings.lease_timeout_s,
                          max_attempts=settings.max_attempts),
        heartbeat_interval_s=settings.heartbeat_interval_s,
        max_running_jobs=settings.max_running_jobs,
        retry_delay_s=settings.retry_delay_s,
        quota_retry_s=settings.quota_retry_s,
    )  # fmt: skip


def _requeue(job_id: str, delay: float) -> None:
    run_job.apply_async((job_id,), countdown=delay, queue=QUEUE)


@app.task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: str) -> str:
    """Run the stored job `job_id` to its end; the outcome is recorded on the job row."""
    sessions, store, models = _runtime()
    settings = get_settings()
    return run_stored_job(
        job_id,
        sessions=sessions,
        store=store,
        model_cache=settings.model_cache,
        data_roots=list(settings.data_roots),
        model_roots=list(settings.model_roots),
        models=models,
        policy=run_policy(settings),
        requeue=_requeue,
        max_layers=settings.max_layers,
        graph_cache_bytes=settings.graph_cache_mb << 20,
        hub_downloads=settings.hub_downloads,
    )
