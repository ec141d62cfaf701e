"""Run one stored job: the bridge between the job database and the science pipeline.

The Celery task is a one-line call to `run_stored_job`; keeping the logic here means it is
tested without Celery and the task never carries more than a job id.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from reprlab.schemas.jobs import JobError, Progress, StageRecord
from reprlab.server import crud
from reprlab.server.storage import ArtifactStore
from reprlab.worker.errors import JobCancelled, ReprlabError
from reprlab.worker.models import ModelCache
from reprlab.worker.pipeline import run_pipeline

log = logging.getLogger(__name__)


class DbReporter:
    """Writes progress and stage records to the job row; polls the cancel flag.

    Progress writes are throttled (a forward pass can report hundreds of batches) and so are
    cancel checks, which cost a database round trip.
    """

    def __init__(
        self, sessions: sessionmaker[Session], job_id: str, *, min_interval: float = 0.5
    ) -> None:
        self._sessions = sessions
        self._job_id = job_id
        self._min_interval = min_interval
        self._last_progress = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False

    def progress(self, stage: str, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last_progress < self._min_interval and fraction < 1.0:
            return
        self._last_progress = now
        progress = Progress(stage=stage, fraction=min(max(fraction, 0.0), 1.0), message=message)
        with self._sessions() as s:
            crud.update_progress(s, self._job_id, progress)

    def stage_done(self, record: StageRecord) -> None:
        log.info(
            "job %s: %s %s in %.2fs", self._job_id, record.name, record.outcome, record.seconds
        )
        with self._sessions() as s:
            crud.append_stage(s, self._job_id, record)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= self._min_interval:
            self._last_cancel_check = now
            with self._sessions() as s:
                self._cancelled = crud.is_cancel_requested(s, self._job_id)
        return self._cancelled


def run_stored_job(
    job_id: str,
    *,
    sessions: sessionmaker[Session],
    store: ArtifactStore,
    model_cache: Path,
    data_roots: list[Path],
    model_roots: list[Path],
    models: ModelCache | None = None,
) -> str:
    """Run a queued job to its end and record the outcome on its row.

    Returns the final status ("succeeded", "failed", "cancelled", or "skipped" when the job
    was already finished, e.g. a redelivered task).
    """
    with sessions() as s:
        spec = crud.start_job(s, job_id)
    if spec is None:
        log.info("job %s is not runnable (finished, cancelled or unknown); skipping", job_id)
        return "skipped"
    reporter = DbReporter(sessions, job_id)
    try:
        output = run_pipeline(
            spec,
            store=store,
            model_cache=model_cache,
            reporter=reporter,
            data_roots=data_roots,
            model_roots=model_roots,
            job_id=job_id,
            models=models,
        )
    except JobCancelled:
        with sessions() as s:
            crud.mark_cancelled(s, job_id)
        return "cancelled"
    except ReprlabError as exc:
        log.warning("job %s failed: %s", job_id, exc.message)
        with sessions() as s:
            crud.fail_job(s, job_id, exc.to_job_error())
        return "failed"
    except Exception as exc:  # noqa: BLE001 - any bug must still end the job with an error
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        error = JobError(
            type=type(exc).__name__,
            message=str(exc) or repr(exc),
            hint="An unexpected error in the worker; its log has the traceback.",
        )
        with sessions() as s:
            crud.fail_job(s, job_id, error)
        return "failed"
    keys = output.artifact_keys
    with sessions() as s:
        crud.finish_job(s, job_id, results_key=keys["results.json"], artifacts=keys)
    return "succeeded"
