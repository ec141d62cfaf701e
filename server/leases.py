"""Who runs a job: a worker's lease on it, takeovers after a worker died, and the running quota.

A worker that starts a job records its id (`host:pid:nonce`) in `worker` and renews
`heartbeat_at` every few seconds. A lease is *fresh* while its heartbeat is younger than
`lease_timeout_s`. A task delivered for a running job with a fresh lease is dropped (the job's
worker is alive: the broker redelivered a long job's message, or the reconciler re-enqueued it
in a gap); with a stale lease the job is taken over by a compare-and-set on `attempts`, so of
two racing takers exactly one wins, and the old worker (should it be alive after all) finds its
lease gone at its next renewal and stops. `attempts` counts starts: a job whose workers keep
dying ends `failed` once `max_attempts` starts ended without an outcome.

A queued job is started only while its owner has fewer running jobs than their quota; the check
and the start are one conditional UPDATE, serialised per owner on PostgreSQL by an advisory lock
(SQLite serialises every write), so racing workers never exceed the quota.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, func, or_, select, text
from sqlalchemy.orm import Session

from reprlab.schemas.jobs import JobError, JobStatus, Progress, StageRecord
from reprlab.schemas.specs import JobSpec
from reprlab.server import crud
from reprlab.server.models import JobRow, UserRow, utcnow

TIME_LIMIT_ERROR = "TimeLimitExceeded"
ATTEMPTS_ERROR = "AttemptsExhausted"
INTERRUPTED = "interrupted"  # the outcome of an attempt's record in the stage log


@dataclass(frozen=True)
class LeasePolicy:
    """How long a lease lasts without a heartbeat, and how many starts a job gets."""

    lease_timeout_s: float = 45.0
    max_attempts: int = 3


class ClaimOutcome(StrEnum):
    RUN = "run"  # this worker now holds the lease: run the job
    GONE = "gone"  # finished, cancelled or unknown: nothing to do
    HELD = "held"  # another worker holds a fresh lease (or won the race): drop the delivery
    BUSY = "busy"  # the owner is at their running quota: put the job back for later
    ENDED = "ended"  # ended now: a cancel honoured, the time limit or the attempts used up


@dataclass(frozen=True)
class Claim:
    """What a worker may do with a delivered job."""

    outcome: ClaimOutcome
    detail: str = ""
    spec: JobSpec | None = None
    attempt: int = 0
    deadline: datetime | None = None  # when the job's wall-clock limit runs out
    time_limit_s: int | None = None


def claim_job(
    s: Session, job_id: str, *, worker: str, policy: LeasePolicy = LeasePolicy(),
    max_running: int | None = None, now: datetime | None = None,
) -> Claim:  # fmt: skip
    """Take the job for `worker` if it may run now.

    Args:
        worker: the claiming worker's id, recorded as the lease holder.
        policy: lease timeout and attempt bound.
        max_running: the server-wide running quota; the owner's `users.max_running_jobs`
            overrides it. None: no quota.
    """
    now = now or utcnow()
    row = s.get(JobRow, job_id, populate_existing=True)
    if row is None:
        return Claim(ClaimOutcome.GONE, "unknown job")
    if row.status == JobStatus.QUEUED.value:
        return _claim_queued(s, row, worker, max_running, now)
    if row.status == JobStatus.RUNNING.value:
        return _take_over(s, row, worker, policy, now)
    return Claim(ClaimOutcome.GONE, f"the job is {row.status}")


def _claim_queued(
    s: Session, row: JobRow, worker: str, max_running: int | None, now: datetime
) -> Claim:
    job_id, owner, attempts, limit_s = row.id, row.owner, row.attempts, row.time_limit_s
    spec = JobSpec.model_validate(row.spec)
    conditions: list[ColumnElement[bool]] = [
        JobRow.id == job_id, JobRow.status == JobStatus.QUEUED.value,
    ]  # fmt: skip
    limit = None if max_running is None else running_limit(s, owner, max_running)
    if limit is not None:
        _lock_owner(s, owner)
        running = (
            select(func.count())
            .select_from(JobRow)
            .where(JobRow.owner == owner, JobRow.status == JobStatus.RUNNING.value)
            .scalar_subquery()
        )
        conditions.append(running < limit)
    started = Progress(stage="starting", fraction=0.0, message="a worker took the job")
    won = crud.conditional_update(
        s, conditions, status=JobStatus.RUNNING.value, started_at=now, attempts=attempts + 1,
        worker=worker, heartbeat_at=now, progress=started.model_dump(mode="json"),
    )  # fmt: skip
    if won:
        deadline = _deadline(now, limit_s)
        return Claim(ClaimOutcome.RUN, "started", spec, attempts + 1, deadline, limit_s)
    current = s.get(JobRow, job_id, populate_existing=True)
    if current is not None and current.status == JobStatus.QUEUED.value and limit is not None:
        n = count_running(s, owner)
        detail = f"{owner} already has {n} running jobs (max_running_jobs={limit})"
        return Claim(ClaimOutcome.BUSY, detail)
    return Claim(ClaimOutcome.HELD, "another worker started the job first, or it was cancelled")


def _take_over(s: Session, row: JobRow, worker: str, policy: LeasePolicy, now: datetime) -> Claim:
    age = lease_age(row, now)
    if age is not None and age < policy.lease_timeout_s:
        return Claim(ClaimOutcome.HELD, f"held by {row.worker} (heartbeat {age:.0f} s ago)")
    ended = end_if_due(s, row, policy, now)
    if ended is not None:
        return Claim(ClaimOutcome.ENDED, ended)
    # Read everything before the UPDATE commits (a session may expire `row` on commit).
    job_id, attempts, previous, reason = row.id, row.attempts, row.worker, interruption(row, now)
    spec, deadline, limit_s = JobSpec.model_validate(row.spec), deadline_of(row), row.time_limit_s
    if not crud.conditional_update(
        s, stale_lease(row, policy, now), worker=worker, heartbeat_at=now, attempts=attempts + 1
    ):
        return Claim(ClaimOutcome.HELD, "another worker took the job over first")
    if previous is not None:  # a released lease recorded its own reason
        record_interruption(s, job_id, attempts, reason, worker=worker)
    detail = f"took the job over: {reason}"
    return Claim(ClaimOutcome.RUN, detail, spec, attempts + 1, deadline, limit_s)


def end_if_due(s: Session, row: JobRow, policy: LeasePolicy, now: datetime) -> str | None:
    """End a running job whose lease is stale if it must not run again; why, or None.

    A cancel requested while its worker was gone is honoured; a job past its time limit fails
    with `TimeLimitExceeded`; a job started `max_attempts` times fails with
    `AttemptsExhausted`. Each is conditional on the lease still being stale, so a worker that
    takes the job over meanwhile wins.
    """
    guard = stale_lease(row, policy, now)
    if row.cancel_requested:
        progress = Progress(
            stage="cancelled",
            fraction=0.0,
            message="cancelled by its owner while no worker held the job",
        )
        done = crud.conditional_update(
            s, guard, status=JobStatus.CANCELLED.value, finished_at=utcnow(),
            progress=progress.model_dump(mode="json"),
        )  # fmt: skip
        return "cancel honoured: the job's worker was gone" if done else None
    deadline = deadline_of(row)
    if deadline is not None and now >= deadline:
        error = time_limit_error(row.time_limit_s or 0)
        return error.message if fail_if(s, guard, error) else None
    if row.attempts >= policy.max_attempts:
        error = JobError(
            type=ATTEMPTS_ERROR,
            message=f"the job was started {row.attempts} times (max_attempts="
            f"{policy.max_attempts}) and no attempt finished; the last one ended because "
            f"{interruption(row, now)}",
            hint="a worker that keeps dying on this job is often out of memory (host or GPU): "
            "see the worker's log; lower the batch size, the number of items or the model size",
        )  # fmt: skip
        return error.message if fail_if(s, guard, error) else None
    return None


def time_limit_error(limit_s: int) -> JobError:
    """The error of a job that ran past its wall-clock limit."""
    return JobError(
        type=TIME_LIMIT_ERROR,
        message=f"the job ran longer than its time limit of {limit_s} s (time_limit_s) and "
        "was stopped",
        hint="finished stages are stored: resubmit with a larger time_limit_s (up to the "
        "server's max_job_seconds) and they are reused",
    )


def renew_lease(s: Session, job_id: str, worker: str, now: datetime | None = None) -> bool:
    """Renew `worker`'s lease on a running job; False if it no longer holds it."""
    return crud.conditional_update(
        s, [JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value,
            JobRow.worker == worker],
        heartbeat_at=now or utcnow(),
    )  # fmt: skip


def release_lease(s: Session, job_id: str, worker: str, reason: str) -> bool:
    """Give a running job back (its attempt hit a transient error) so any worker may take it
    over at once; the reason goes into the stage log. False if `worker` no longer held it."""
    row = s.get(JobRow, job_id, populate_existing=True)
    if row is None or row.worker != worker:
        return False
    record_interruption(s, job_id, row.attempts, reason, worker=worker)
    return crud.conditional_update(
        s, [JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value,
            JobRow.worker == worker],
        worker=None, heartbeat_at=None,
    )  # fmt: skip


def record_interruption(s: Session, job_id: str, attempt: int, reason: str, *, worker: str) -> None:
    """Note in the stage log that attempt `attempt` ended without an outcome, and why."""
    record = StageRecord(name=f"attempt-{attempt}", outcome=INTERRUPTED, seconds=0.0,
                         detail=reason)  # fmt: skip
    crud.append_stage(s, job_id, record, worker=worker)


def interruption(row: JobRow, now: datetime) -> str:
    """Why the job's last attempt ended without an outcome."""
    if row.worker is None:  # released: the releasing worker logged the reason
        for record in reversed(row.stages or []):
            if record.get("outcome") == INTERRUPTED:
                return str(record.get("detail", "its worker gave it back"))
        return "no worker held it"
    age = lease_age(row, now)
    seen = "never renewed it" if age is None else f"last renewed it {age:.0f} s ago"
    return f"its worker {row.worker} stopped renewing its lease (killed or crashed?); it {seen}"


def lease_age(row: JobRow, now: datetime) -> float | None:
    """Seconds since the job's last heartbeat (None without one)."""
    if row.heartbeat_at is None:
        return None
    return (now - row.heartbeat_at).total_seconds()


def stale_lease(row: JobRow, policy: LeasePolicy, now: datetime) -> list[ColumnElement[bool]]:
    """Conditions that hold while `row` is still running on the stale lease seen in `row`."""
    cutoff = now - timedelta(seconds=policy.lease_timeout_s)
    return [
        JobRow.id == row.id,
        JobRow.status == JobStatus.RUNNING.value,
        JobRow.attempts == row.attempts,
        or_(JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < cutoff),
    ]


def running_limit(s: Session, owner: str, default: int) -> int:
    """The owner's running quota: their `max_running_jobs` override, else `default`."""
    override = s.scalar(select(UserRow.max_running_jobs).where(UserRow.name == owner))
    return int(override) if override is not None else default


def count_running(s: Session, owner: str) -> int:
    """Jobs of `owner` now running."""
    query = select(func.count()).select_from(JobRow)
    query = query.where(JobRow.owner == owner, JobRow.status == JobStatus.RUNNING.value)
    return int(s.scalar(query) or 0)


def _deadline(start: datetime | None, limit_s: int | None) -> datetime | None:
    if start is None or limit_s is None:
        return None
    return start + timedelta(seconds=limit_s)


def deadline_of(row: JobRow) -> datetime | None:
    """When a running job's wall-clock limit (counted from its first start) runs out."""
    return _deadline(row.started_at, row.time_limit_s)


def _lock_owner(s: Session, owner: str) -> None:
    """Serialise quota checks of one owner until the transaction ends (PostgreSQL; SQLite
    already runs one writer at a time)."""
    if s.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"reprlab-running:{owner}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def fail_if(s: Session, conditions: list[ColumnElement[bool]], error: JobError) -> bool:
    """End the job matching `conditions` as failed with `error`; True if one matched."""
    return crud.conditional_update(
        s, conditions, status=JobStatus.FAILED.value, finished_at=utcnow(),
        error=error.model_dump(mode="json"),
    )  # fmt: skip
