"""Every read and write of the job database, as plain functions over a Session.

Job state transitions are conditional UPDATEs (`... WHERE status IN (...)`), so of two racing
transitions (a cancel and a worker's start, two workers taking a queued job) exactly one wins.
Who may run a job (the worker's lease, takeovers, attempts) is decided in `leases`; the writes
a worker makes while running a job take `worker=` so that a worker which lost its lease cannot
overwrite its successor's work.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, func, or_, select, update
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
        attempts=row.attempts or 0,
        time_limit_s=row.time_limit_s,
    )


def create_job(s: Session, owner: str, spec: JobSpec, *, time_limit_s: int | None = None) -> Job:
    """Store a new queued job (about to be enqueued, so `enqueued_at` is now).

    Args:
        time_limit_s: the job's wall-clock limit once running (resolved by the API).
    """
    now = utcnow()
    row = JobRow(
        id=uuid.uuid4().hex,
        owner=owner,
        name=spec.name,
        status=JobStatus.QUEUED.value,
        spec=spec.model_dump(mode="json"),
        progress=Progress().model_dump(mode="json"),
        stages=[],
        artifacts={},
        created_at=now,
        enqueued_at=now,
        time_limit_s=time_limit_s,
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


def _transition(
    s: Session, job_id: str, allowed: list[JobStatus], *, holder: str | None = None,
    where: Sequence[ColumnElement[bool]] = (), **values: Any,
) -> bool:  # fmt: skip
    """Set `values` on the job only if its status is one of `allowed`, `where` holds and (with
    `holder`) that worker holds the job's lease; True if it changed."""
    # One conditional UPDATE is atomic on SQLite and PostgreSQL alike: of two racing
    # transitions (cancel vs start, two deliveries of a task) exactly one matches the row.
    conditions = [JobRow.id == job_id, JobRow.status.in_([a.value for a in allowed]), *where]
    if holder is not None:
        conditions.append(JobRow.worker == holder)
    return conditional_update(s, conditions, **values)


def conditional_update(s: Session, conditions: list[ColumnElement[bool]], **values: Any) -> bool:
    """One conditional UPDATE of the jobs table, committed; True if it matched a row."""
    result = cast(
        CursorResult[Any],
        s.execute(
            update(JobRow)
            .where(*conditions)
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


def start_job(s: Session, job_id: str, *, worker: str = "worker") -> JobSpec | None:
    """Take the job for `worker` and return its spec; None if it must not run now.

    A shorthand of `leases.claim_job` with the default lease policy and no running quota: a
    queued job starts; a running one is taken over only if its lease is stale.
    """
    from reprlab.server.leases import ClaimOutcome, claim_job

    claim = claim_job(s, job_id, worker=worker)
    return claim.spec if claim.outcome is ClaimOutcome.RUN else None


def mark_enqueued(
    s: Session, job_id: str, *, now: datetime | None = None, before: datetime | None = None
) -> bool:
    """Record that a queued or running job was handed to the queue (again) now; True if so.

    With `before`, only if it was last enqueued before then: of several reconcilers that saw
    the same lost job, one wins and enqueues it.
    """
    where: list[ColumnElement[bool]] = []
    if before is not None:
        where.append(or_(JobRow.enqueued_at.is_(None), JobRow.enqueued_at < before))
    return _transition(
        s, job_id, [JobStatus.QUEUED, JobStatus.RUNNING], where=where, enqueued_at=now or utcnow()
    )


def update_progress(
    s: Session, job_id: str, progress: Progress, *, worker: str | None = None
) -> bool:
    """Record a running job's progress (ignored once the job has ended or, with `worker`, once
    that worker lost the lease); True if recorded."""
    return _transition(
        s, job_id, [JobStatus.RUNNING], holder=worker, progress=progress.model_dump(mode="json")
    )


def append_stage(
    s: Session, job_id: str, record: StageRecord, *, worker: str | None = None
) -> bool:
    """Append a finished stage to the job's stage log; True if appended.

    Only the worker holding the lease writes the log: with `worker`, the append is a
    conditional UPDATE that a worker which lost the lease cannot make.
    """
    row = _row(s, job_id)
    if row is None:
        return False
    stages = [*(row.stages or []), record.model_dump(mode="json")]
    if worker is None:
        row.stages = stages
        s.commit()
        return True
    return _transition(s, job_id, [JobStatus.RUNNING], holder=worker, stages=stages)


def is_cancel_requested(s: Session, job_id: str) -> bool:
    """True when the job's owner asked to stop it (or the job no longer exists)."""
    row = _row(s, job_id)
    return row is None or bool(row.cancel_requested)


def mark_cancelled(
    s: Session, job_id: str, *, worker: str | None = None, message: str = "cancelled by its owner"
) -> bool:
    """End a queued or running job as cancelled (the worker stopped between batches); True if
    this call ended it. With `worker`, only while that worker holds the lease."""
    progress = Progress(stage="cancelled", fraction=0.0, message=message)
    allowed = [JobStatus.RUNNING] if worker is not None else [JobStatus.RUNNING, JobStatus.QUEUED]
    return _transition(
        s, job_id, allowed, holder=worker, status=JobStatus.CANCELLED.value,
        finished_at=utcnow(), progress=progress.model_dump(mode="json"),
    )  # fmt: skip


def fail_job(s: Session, job_id: str, error: JobError, *, worker: str | None = None) -> bool:
    """End a queued or running job as failed, carrying the error as data; True if this call
    ended it. With `worker`, only a running job whose lease that worker holds."""
    allowed = [JobStatus.RUNNING] if worker is not None else [JobStatus.RUNNING, JobStatus.QUEUED]
    return _transition(
        s, job_id, allowed, holder=worker, status=JobStatus.FAILED.value,
        finished_at=utcnow(), error=error.model_dump(mode="json"),
    )  # fmt: skip


def finish_job(
    s: Session, job_id: str, *, results_key: str, artifacts: dict[str, str],
    worker: str | None = None,
) -> bool:  # fmt: skip
    """End a running job as succeeded; True if this call ended it.

    Args:
        results_key: artifact store key of the `JobResults` JSON.
        artifacts: artifact name (e.g. "plots/id_twonn.png", "results.json") -> store key.
        worker: only while this worker holds the job's lease.
    """
    done = Progress(stage="done", fraction=1.0, message="finished")
    return _transition(
        s, job_id, [JobStatus.RUNNING], holder=worker, status=JobStatus.SUCCEEDED.value,
        finished_at=utcnow(), results_key=results_key, artifacts=dict(artifacts),
        progress=done.model_dump(mode="json"),
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
