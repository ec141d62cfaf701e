"""Every read and write of the job database, as plain functions over a Session.

Job state transitions are conditional UPDATEs (`... WHERE status IN (...)`), so of two racing
transitions (a cancel and a worker's start, two workers taking a queued job) exactly one wins.
A task delivered again for a job already `running` is taken as a redelivery after its worker
died (the broker's visibility timeout exceeds any job, so a live worker is not duplicated).
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from reprlab.schemas.jobs import Job, JobError, JobList, JobStatus, Progress, StageRecord
from reprlab.schemas.specs import JobSpec
from reprlab.server.models import JobRow, utcnow


class JobNotFound(LookupError):
    """No job with this id (for this owner)."""


class JobConflict(RuntimeError):
    """The job is in a state that does not allow the request (HTTP 409)."""


def to_job(row: JobRow) -> Job:
    """The API view of a job row."""
    return Job(
        id=row.id,
        status=JobStatus(row.status),
        owner=row.owner,
        name=row.name,
        spec=JobSpec.model_validate(row.spec),
        progress=Progress.model_validate(row.progress),
        stages=[StageRecord.model_validate(r) for r in row.stages or []],
        error=JobError.model_validate(row.error) if row.error else None,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def create_job(s: Session, owner: str, spec: JobSpec) -> Job:
    """Store a new queued job."""
    row = JobRow(
        id=uuid.uuid4().hex,
        owner=owner,
        name=spec.name,
        status=JobStatus.QUEUED.value,
        spec=spec.model_dump(mode="json"),
        progress=Progress().model_dump(mode="json"),
        stages=[],
        artifacts={},
        created_at=utcnow(),
    )
    s.add(row)
    s.commit()
    return to_job(row)


def _row(s: Session, job_id: str, owner: str | None = None) -> JobRow | None:
    row = s.get(JobRow, job_id, populate_existing=True)
    if row is None or (owner is not None and row.owner != owner):
        return None
    return row


def get_job(s: Session, job_id: str, owner: str | None = None) -> Job | None:
    """A job by id; None if unknown or (when `owner` is given) owned by someone else."""
    row = _row(s, job_id, owner)
    return to_job(row) if row is not None else None


def list_jobs(
    s: Session, owner: str | None, *, status: JobStatus | None = None, limit: int = 50,
    offset: int = 0,
) -> JobList:  # fmt: skip
    """A page of jobs, newest first."""
    query = select(JobRow)
    count = select(func.count()).select_from(JobRow)
    if owner is not None:
        query, count = query.where(JobRow.owner == owner), count.where(JobRow.owner == owner)
    if status is not None:
        query = query.where(JobRow.status == status.value)
        count = count.where(JobRow.status == status.value)
    rows = s.scalars(
        query.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset)
    ).all()
    return JobList(jobs=[to_job(r) for r in rows], total=int(s.scalar(count) or 0))


def _transition(s: Session, job_id: str, allowed: list[JobStatus], **values: Any) -> bool:
    """Set `values` on the job only if its status is one of `allowed`; True if it changed."""
    # One conditional UPDATE is atomic on SQLite and PostgreSQL alike: of two racing
    # transitions (cancel vs start, two deliveries of a task) exactly one matches the row.
    result = cast(
        CursorResult[Any],
        s.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status.in_([a.value for a in allowed]))
            .values(**values)
            .execution_options(synchronize_session=False)
        ),
    )
    s.commit()
    return result.rowcount > 0


def request_cancel(s: Session, job_id: str, owner: str | None = None) -> Job:
    """Cancel a queued job now, or ask a running job's worker to stop at its next batch.

    Raises:
        JobNotFound: no such job (for this owner).
        JobConflict: the job already finished.
    """
    row = _row(s, job_id, owner)
    if row is None:
        raise JobNotFound(job_id)
    now = utcnow()
    cancelled = Progress(stage="cancelled", fraction=0.0, message="cancelled before it started")
    if not _transition(
        s, job_id, [JobStatus.QUEUED], status=JobStatus.CANCELLED.value, finished_at=now,
        cancel_requested=True, progress=cancelled.model_dump(mode="json"),
    ):  # fmt: skip
        if not _transition(s, job_id, [JobStatus.RUNNING], cancel_requested=True):
            current = _row(s, job_id)
            status = current.status if current is not None else "unknown"
            raise JobConflict(
                f"job {job_id} is {status}; only queued or running jobs can be cancelled"
            )
    job = get_job(s, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def start_job(s: Session, job_id: str) -> JobSpec | None:
    """Mark a queued job running and return its spec; None if it must not run.

    A job already `running` is returned too: that is a task redelivered after its worker died,
    and the pipeline's content-keyed stages make the rerun reuse finished work. A running job
    whose cancel was requested is marked cancelled instead (its worker died before it could).
    Finished, cancelled and unknown jobs give None.
    """
    row = _row(s, job_id)
    if row is None:
        return None
    spec = JobSpec.model_validate(row.spec)
    started = Progress(stage="starting", fraction=0.0, message="a worker took the job")
    if _transition(
        s, job_id, [JobStatus.QUEUED], status=JobStatus.RUNNING.value, started_at=utcnow(),
        progress=started.model_dump(mode="json"),
    ):  # fmt: skip
        return spec
    row = _row(s, job_id)
    if row is None or row.status != JobStatus.RUNNING.value:
        return None
    if row.cancel_requested:
        mark_cancelled(s, job_id)
        return None
    return spec


def update_progress(s: Session, job_id: str, progress: Progress) -> None:
    """Record a running job's progress (ignored once the job has ended)."""
    _transition(s, job_id, [JobStatus.RUNNING], progress=progress.model_dump(mode="json"))


def append_stage(s: Session, job_id: str, record: StageRecord) -> None:
    """Append a finished stage to the job's stage log (only its worker writes the log)."""
    row = _row(s, job_id)
    if row is None:
        return
    row.stages = [*(row.stages or []), record.model_dump(mode="json")]
    s.commit()


def is_cancel_requested(s: Session, job_id: str) -> bool:
    """True when the job's owner asked to stop it (or the job no longer exists)."""
    row = _row(s, job_id)
    return row is None or bool(row.cancel_requested)


def mark_cancelled(s: Session, job_id: str) -> None:
    """End a queued or running job as cancelled (the worker stopped between batches)."""
    progress = Progress(stage="cancelled", fraction=0.0, message="cancelled by its owner")
    _transition(
        s, job_id, [JobStatus.RUNNING, JobStatus.QUEUED], status=JobStatus.CANCELLED.value,
        finished_at=utcnow(), progress=progress.model_dump(mode="json"),
    )  # fmt: skip


def fail_job(s: Session, job_id: str, error: JobError) -> None:
    """End a queued or running job as failed, carrying the error as data."""
    _transition(
        s, job_id, [JobStatus.RUNNING, JobStatus.QUEUED], status=JobStatus.FAILED.value,
        finished_at=utcnow(), error=error.model_dump(mode="json"),
    )  # fmt: skip


def finish_job(s: Session, job_id: str, *, results_key: str, artifacts: dict[str, str]) -> None:
    """End a running job as succeeded.

    Args:
        results_key: artifact store key of the `JobResults` JSON.
        artifacts: artifact name (e.g. "plots/id_twonn.png", "results.json") -> store key.
    """
    done = Progress(stage="done", fraction=1.0, message="finished")
    _transition(
        s, job_id, [JobStatus.RUNNING], status=JobStatus.SUCCEEDED.value, finished_at=utcnow(),
        results_key=results_key, artifacts=dict(artifacts), progress=done.model_dump(mode="json"),
    )  # fmt: skip


def artifact_keys(s: Session, job_id: str) -> dict[str, str]:
    """Every artifact of a job: name -> artifact store key (empty until it succeeded)."""
    row = _row(s, job_id)
    return dict(row.artifacts or {}) if row is not None else {}


def artifact_key(s: Session, job_id: str, name: str) -> str | None:
    """The store key of one named artifact of a job, or None."""
    return artifact_keys(s, job_id).get(name)


def results_key(s: Session, job_id: str) -> str | None:
    """The store key of a succeeded job's results JSON, or None."""
    row = _row(s, job_id)
    return row.results_key if row is not None else None
