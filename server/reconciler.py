"""The reconciler: the database is the source of truth, the broker only a delivery mechanism.

Each round (`reconcile_once`) looks for jobs the broker lost or whose worker died and hands them
to the queue again:

- a queued job not enqueued for `grace_s` with no live message in the broker (Redis restarted
  empty, a publish lost, a dead worker held its delayed message);
- a running job whose lease is stale (its worker died): ended instead if its cancel was
  requested, its time limit passed or its attempts are used up (`leases.end_if_due`);
- a running job still past its time limit a lease timeout after its deadline (its worker
  missed it, e.g. one long stage without a batch boundary) is failed; the worker finds its lease
  gone at the next renewal and stops.

A re-enqueue first moves `enqueued_at` forward with a conditional UPDATE, so several
reconcilers (API server processes, `reprlab reconcile`) never enqueue one job twice in a round;
a duplicate message would be harmless anyway (the lease drops it). The API server runs a round
every `reconcile_interval_s` in a background thread; `reprlab reconcile --once` runs one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, cast

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from reprlab.schemas.jobs import JobStatus
from reprlab.server import crud, leases
from reprlab.server.config import Settings
from reprlab.server.leases import LeasePolicy
from reprlab.server.models import JobRow, utcnow
from reprlab.server.queue import BrokerView, JobQueue, QueueUnavailable
from reprlab.server.storage import ArtifactStore

log = logging.getLogger(__name__)


class InspectableQueue(JobQueue, BrokerView, Protocol):
    """A job queue that also tells which jobs it holds a live message for."""


@dataclass(frozen=True)
class ReconcilePolicy:
    """When a job counts as lost, and how old a temporary artifact file must be to go."""

    lease: LeasePolicy = field(default_factory=LeasePolicy)
    grace_s: float = 30.0
    temp_max_age_s: float = 6 * 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ReconcilePolicy:
        lease = LeasePolicy(settings.lease_timeout_s, settings.max_attempts)
        return cls(lease, settings.requeue_grace_s, settings.artifact_temp_max_age_s)


@dataclass
class ReconcileReport:
    """What one round did."""

    requeued: list[str] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)  # job id -> why
    temp_removed: int = 0
    broker_error: str | None = None

    def summary(self) -> str:
        text = (
            f"re-enqueued {len(self.requeued)} jobs, ended {len(self.ended)}, removed "
            f"{self.temp_removed} temporary artifact files"
        )
        if self.broker_error:
            text += f"; the broker could not be used: {self.broker_error}"
        return text


def reconcile_once(
    sessions: sessionmaker[Session], queue: InspectableQueue, policy: ReconcilePolicy, *,
    store: ArtifactStore | None = None, now: datetime | None = None,
) -> ReconcileReport:  # fmt: skip
    """One round: end or re-enqueue lost jobs; with `store`, sweep dead writers' temp files."""
    now = now or utcnow()
    report = ReconcileReport()
    with sessions() as s:
        lost = _settle_stale_running(s, policy.lease, now, report)
        _fail_overdue_running(s, policy.lease, now, report)
        lost += _quiet_queued(s, now - timedelta(seconds=policy.grace_s))
    if lost:
        _requeue_lost(sessions, queue, lost, policy.grace_s, now, report)
    if store is not None:
        report.temp_removed = store.sweep_temp(policy.temp_max_age_s)
    return report


def _settle_stale_running(
    s: Session, lease: LeasePolicy, now: datetime, report: ReconcileReport
) -> list[str]:
    """End the stale running jobs that must not run again; the ids of those that may."""
    cutoff = now - timedelta(seconds=lease.lease_timeout_s)
    rows = s.scalars(
        select(JobRow)
        .where(JobRow.status == JobStatus.RUNNING.value)
        .where(or_(JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < cutoff))
        .order_by(JobRow.created_at)
    ).all()
    rerun = []
    for row in rows:
        job_id = row.id
        why = leases.end_if_due(s, row, lease, now)
        if why is None:
            rerun.append(job_id)
        else:
            report.ended[job_id] = why
            log.warning("reconciler: job %s ended: %s", job_id, why)
    return rerun


def _fail_overdue_running(
    s: Session, lease: LeasePolicy, now: datetime, report: ReconcileReport
) -> None:
    """Fail running jobs a lease timeout past their deadline (their worker did not stop)."""
    rows = s.execute(
        select(JobRow.id, JobRow.started_at, JobRow.time_limit_s, JobRow.attempts).where(
            JobRow.status == JobStatus.RUNNING.value, JobRow.time_limit_s.is_not(None)
        )
    ).all()
    slack = timedelta(seconds=lease.lease_timeout_s)
    for job_id, started_at, limit_s, attempts in rows:
        if started_at is None or limit_s is None:
            continue
        if now < started_at + timedelta(seconds=limit_s) + slack:
            continue
        guard = [
            JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value,
            JobRow.attempts == attempts,
        ]  # fmt: skip
        error = leases.time_limit_error(limit_s)
        if leases.fail_if(s, guard, error):
            report.ended[job_id] = error.message
            log.warning("reconciler: job %s ended: %s", job_id, error.message)


def _quiet_queued(s: Session, before: datetime) -> list[str]:
    """Queued jobs last handed to the queue before `before`, oldest first."""
    last = func.coalesce(JobRow.enqueued_at, JobRow.created_at)
    return list(
        s.scalars(
            select(JobRow.id)
            .where(JobRow.status == JobStatus.QUEUED.value, last < before)
            .order_by(JobRow.created_at)
        ).all()
    )


def _requeue_lost(
    sessions: sessionmaker[Session], queue: InspectableQueue, candidates: list[str],
    grace_s: float, now: datetime, report: ReconcileReport,
) -> None:  # fmt: skip
    try:
        pending = queue.pending_jobs(now=now.timestamp(), grace_s=grace_s)
    except QueueUnavailable as exc:
        report.broker_error = str(exc)
        log.warning("reconciler: %s", exc)
        return
    before = now - timedelta(seconds=grace_s)
    for job_id in candidates:
        if job_id in pending:
            continue
        with sessions() as s:
            if not crud.mark_enqueued(s, job_id, now=now, before=before):
                continue  # another reconciler took it, or it ended meanwhile
        try:
            queue.enqueue(job_id)
        except QueueUnavailable as exc:
            report.broker_error = str(exc)
            log.warning("reconciler: %s", exc)
            return
        report.requeued.append(job_id)
        log.info("reconciler: re-enqueued job %s (its message was lost)", job_id)


class Reconciler:
    """Runs `reconcile_once` every `interval_s` seconds in a daemon thread."""

    def __init__(
        self, sessions: sessionmaker[Session], queue: InspectableQueue, policy: ReconcilePolicy,
        interval_s: float, *, store: ArtifactStore | None = None, sweep_every_s: float = 3600.0,
    ) -> None:  # fmt: skip
        self._sessions, self._queue, self._policy = sessions, queue, policy
        self._interval, self._store, self._sweep_every = interval_s, store, sweep_every_s
        self._last_sweep = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reprlab-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            sweep = time.monotonic() - self._last_sweep >= self._sweep_every
            try:
                report = reconcile_once(
                    self._sessions, self._queue, self._policy,
                    store=self._store if sweep else None,
                )  # fmt: skip
            except Exception:  # noqa: BLE001 - the database may be away; try next round
                log.exception("reconciler round failed")
            else:
                if sweep:
                    self._last_sweep = time.monotonic()
                if report.requeued or report.ended or report.temp_removed:
                    log.info("reconciler: %s", report.summary())
            self._stop.wait(self._interval)


def start_reconciler(
    sessions: sessionmaker[Session], queue: JobQueue, settings: Settings, *,
    store: ArtifactStore | None = None,
) -> Reconciler | None:  # fmt: skip
    """Start the background reconciler of an API server; None when `reconcile_interval_s` is
    0 or the queue cannot be inspected (a test double)."""
    if settings.reconcile_interval_s <= 0 or not isinstance(queue, BrokerView):
        return None
    reconciler = Reconciler(
        sessions, cast(InspectableQueue, queue), ReconcilePolicy.from_settings(settings),
        settings.reconcile_interval_s, store=store,
    )  # fmt: skip
    reconciler.start()
    return reconciler
