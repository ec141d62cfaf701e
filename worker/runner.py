"""Run one stored job: the bridge between the job database and the science pipeline.

The Celery task is a one-line call to `run_stored_job`; keeping the logic here means it is
tested without Celery and the task never carries more than a job id.

A run holds the job's lease (see `reprlab.server.leases`), renewed by a daemon thread. The
pipeline asks `should_stop` between batches and training steps; it stops for a cancel, for the
job's wall-clock limit, and when the lease was lost to another worker. Which failures are
retried: only worker deaths (the next worker takes the stale lease over) and transient
infrastructure errors (`TRANSIENT_ERRORS`: the database or the network went away), which give
the lease back and put the job on the queue again. Every other error ends the job `failed` at
once: a spec or model error, or a bug, would fail the same way again.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from types import TracebackType

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from reprlab.schemas.jobs import JobError, Progress, StageRecord
from reprlab.schemas.specs import JobSpec
from reprlab.server import crud, leases, users
from reprlab.server.leases import Claim, ClaimOutcome, LeasePolicy
from reprlab.server.models import utcnow
from reprlab.server.storage import ArtifactStore
from reprlab.worker.errors import JobCancelled, ReprlabError
from reprlab.worker.metrics.graphs import DEFAULT_BUDGET_BYTES
from reprlab.worker.models import ModelCache, release_memory
from reprlab.worker.pipeline import PipelineOutput, run_pipeline

log = logging.getLogger(__name__)

# Errors after which the same job may well succeed: the database or a network peer went away.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
)

# Puts a job back on the queue: (job id, delay in seconds).
Requeue = Callable[[str, float], None]


@dataclass(frozen=True)
class RunPolicy:
    """The worker side of the fault-tolerance settings."""

    lease: LeasePolicy = field(default_factory=LeasePolicy)
    heartbeat_interval_s: float = 5.0
    max_running_jobs: int | None = None  # the owner's override applies; None: no quota
    retry_delay_s: float = 10.0
    quota_retry_s: float = 15.0


def worker_id() -> str:
    """This process's lease-holder id: host, pid and a nonce (pids repeat across restarts)."""
    return _worker_id(os.getpid())


@lru_cache(maxsize=4)
def _worker_id(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{secrets.token_hex(3)}"


class StopReason(StrEnum):
    CANCEL = "cancel"
    TIME_LIMIT = "time limit"
    LEASE_LOST = "lease lost"


class Heartbeat:
    """Renews a job's lease from a daemon thread; `lost` is set once the worker no longer holds
    it (another worker took the job over, or the job was ended from outside)."""

    def __init__(
        self, sessions: sessionmaker[Session], job_id: str, worker: str, interval: float
    ) -> None:
        self.lost = threading.Event()
        self._sessions, self._job_id, self._worker = sessions, job_id, worker
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self._stop.set()
        self._thread.join(timeout=self._interval + 30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._sessions() as s:
                    held = leases.renew_lease(s, self._job_id, self._worker)
            except Exception:  # noqa: BLE001 - a database blip: the next beat tries again
                log.warning("job %s: lease renewal failed", self._job_id, exc_info=True)
                continue
            if not held:
                log.warning("job %s: %s no longer holds the lease", self._job_id, self._worker)
                self.lost.set()
                return


class DbReporter:
    """Writes progress and stage records to the job row; decides when the job must stop.

    Progress writes are throttled (a forward pass can report hundreds of batches) and so are
    cancel checks, which cost a database round trip. The lease and the deadline are checked on
    every call (no database work).
    """

    def __init__(
        self, sessions: sessionmaker[Session], job_id: str, *, min_interval: float = 0.5,
        worker: str | None = None, lease_lost: Callable[[], bool] = lambda: False,
        deadline: datetime | None = None,
    ) -> None:  # fmt: skip
        self._sessions = sessions
        self._job_id = job_id
        self._min_interval = min_interval
        self._worker = worker
        self._lease_lost = lease_lost
        self._deadline = deadline
        self._last_progress = 0.0
        self._last_cancel_check = 0.0
        self.stop_reason: StopReason | None = None

    def progress(self, stage: str, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last_progress < self._min_interval and fraction < 1.0:
            return
        self._last_progress = now
        progress = Progress(stage=stage, fraction=min(max(fraction, 0.0), 1.0), message=message)
        with self._sessions() as s:
            self._written(crud.update_progress(s, self._job_id, progress, worker=self._worker))

    def stage_done(self, record: StageRecord) -> None:
        log.info(
            "job %s: %s %s in %.2fs", self._job_id, record.name, record.outcome, record.seconds
        )
        with self._sessions() as s:
            self._written(crud.append_stage(s, self._job_id, record, worker=self._worker))

    def _written(self, ok: bool) -> None:
        # A refused write means the job is no longer this worker's (taken over, or ended by
        # the reconciler): stop at the next check instead of computing on for nobody.
        if not ok and self._worker is not None and self.stop_reason is None:
            self.stop_reason = StopReason.LEASE_LOST

    def should_stop(self) -> bool:
        if self.stop_reason is not None:
            return True
        if self._lease_lost():
            self.stop_reason = StopReason.LEASE_LOST
        elif self._deadline is not None and utcnow() >= self._deadline:
            self.stop_reason = StopReason.TIME_LIMIT
        else:
            now = time.monotonic()
            if now - self._last_cancel_check >= self._min_interval:
                self._last_cancel_check = now
                with self._sessions() as s:
                    if crud.is_cancel_requested(s, self._job_id):
                        self.stop_reason = StopReason.CANCEL
        return self.stop_reason is not None


def run_stored_job(
    job_id: str,
    *,
    sessions: sessionmaker[Session],
    store: ArtifactStore,
    model_cache: Path,
    data_roots: list[Path],
    model_roots: list[Path],
    models: ModelCache | None = None,
    policy: RunPolicy | None = None,
    requeue: Requeue | None = None,
    worker: str | None = None,
    max_layers: int | None = None,
    graph_cache_bytes: int = DEFAULT_BUDGET_BYTES,
    hub_downloads: bool = False,
) -> str:
    """Run a delivered job to its end if this worker may, and record the outcome on its row.

    Args:
        policy: leases, quota and retry delays (defaults: `RunPolicy()`).
        requeue: puts the job back on the queue after a delay (a job held back by its owner's
            running quota, or one that hit a transient error). None: the reconciler finds it.
        worker: this worker's lease-holder id (default: `worker_id()`).
        max_layers: the server's per-job layer limit, checked once the model's depth is known.
        graph_cache_bytes: memory for kNN graphs reused within the job (`run_pipeline`).
        hub_downloads: let Hugging Face datasets be downloaded (`run_pipeline`).

    Returns:
        "succeeded", "failed", "cancelled"; "deferred" (quota) or "retrying" (transient error):
        the job was put back; "skipped" (finished or unknown), "held" (another worker runs it),
        "ended" (ended without running: a cancel honoured, time limit, attempts used up);
        "lost" (another worker took the job over while this one ran it).
    """
    policy = policy or RunPolicy()
    worker = worker or worker_id()
    with sessions() as s:
        claim = leases.claim_job(
            s, job_id, worker=worker, policy=policy.lease, max_running=policy.max_running_jobs
        )
    if claim.outcome is not ClaimOutcome.RUN:
        log.info("job %s not run (%s): %s", job_id, claim.outcome.value, claim.detail)
        if claim.outcome is ClaimOutcome.BUSY:
            _put_back(sessions, requeue, job_id, policy.quota_retry_s)
            return "deferred"
        return "skipped" if claim.outcome is ClaimOutcome.GONE else claim.outcome.value
    log.info("job %s: attempt %d on %s (%s)", job_id, claim.attempt, worker, claim.detail)
    outcome = "crashed"  # an error escaped (the database is away): the lease runs out
    try:
        with Heartbeat(sessions, job_id, worker, policy.heartbeat_interval_s) as beat:
            reporter = DbReporter(sessions, job_id, worker=worker, lease_lost=beat.lost.is_set,
                                  deadline=claim.deadline)  # fmt: skip
            outcome = _run(job_id, claim, reporter, worker, sessions, policy, requeue,
                           store=store, model_cache=model_cache, data_roots=data_roots,
                           model_roots=model_roots, models=models,
                           max_layers=max_layers, graph_cache_bytes=graph_cache_bytes,
                           hub_downloads=hub_downloads)  # fmt: skip
    finally:
        if outcome != "succeeded":
            # The pipeline's exception (and with it every model the job held) is gone by now.
            release_memory(models)
    return outcome


def _run(
    job_id: str, claim: Claim, reporter: DbReporter, worker: str,
    sessions: sessionmaker[Session], policy: RunPolicy, requeue: Requeue | None, *,
    store: ArtifactStore, model_cache: Path, data_roots: list[Path], model_roots: list[Path],
    models: ModelCache | None, max_layers: int | None = None,
    graph_cache_bytes: int = DEFAULT_BUDGET_BYTES, hub_downloads: bool = False,
) -> str:  # fmt: skip
    if claim.spec is None:
        raise ValueError("a claim to run carries the job's spec")
    untrusted = _untrusted_remote_code(sessions, claim.spec)
    if untrusted is not None:
        return _fail(sessions, job_id, worker, untrusted)
    try:
        output: PipelineOutput = run_pipeline(
            claim.spec, store=store, model_cache=model_cache, reporter=reporter,
            data_roots=data_roots, model_roots=model_roots, job_id=job_id, models=models,
            max_layers=max_layers, graph_cache_bytes=graph_cache_bytes,
            hub_downloads=hub_downloads,
        )  # fmt: skip
    except JobCancelled:
        return _stopped(sessions, job_id, worker, reporter.stop_reason, claim)
    except ReprlabError as exc:
        log.warning("job %s failed: %s", job_id, exc.message)
        return _fail(sessions, job_id, worker, exc.to_job_error())
    except TRANSIENT_ERRORS as exc:
        return _retry_later(sessions, job_id, worker, exc, policy, requeue)
    except Exception as exc:  # noqa: BLE001 - any bug must still end the job with an error
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        error = JobError(
            type=type(exc).__name__,
            message=str(exc) or repr(exc),
            hint="An unexpected error in the worker; its log has the traceback.",
        )
        return _fail(sessions, job_id, worker, error)
    keys = output.artifact_keys
    with sessions() as s:
        done = crud.finish_job(
            s, job_id, results_key=keys["results.json"], artifacts=keys, worker=worker
        )
    return "succeeded" if done else "lost"


def _stopped(
    sessions: sessionmaker[Session], job_id: str, worker: str, reason: StopReason | None,
    claim: Claim,
) -> str:  # fmt: skip
    if reason is StopReason.LEASE_LOST:
        log.warning("job %s: stopped, another worker holds it now", job_id)
        return "lost"
    if reason is StopReason.TIME_LIMIT:
        log.warning("job %s: stopped at its time limit of %s s", job_id, claim.time_limit_s)
        return _fail(sessions, job_id, worker, leases.time_limit_error(claim.time_limit_s or 0))
    with sessions() as s:
        done = crud.mark_cancelled(s, job_id, worker=worker)
    return "cancelled" if done else "lost"


def _untrusted_remote_code(sessions: sessionmaker[Session], spec: JobSpec) -> JobError | None:
    """The error of a job asking for remote code of a model no admin trusts now.

    The server checked at submission; an admin may have untrusted the model since.
    """
    name = spec.model.name
    if not spec.model.trust_remote_code:
        return None
    with sessions() as s:
        if users.is_model_trusted(s, name):
            return None
    return JobError(
        type="ModelNotTrusted",
        message=f"model.trust_remote_code is true, but {name!r} is no longer a trusted model "
        "(an admin untrusted it after this job was submitted)",
        hint=f"leave trust_remote_code out, or ask an admin to run `reprlab admin trust-model "
        f"{name}`",
    )


def _fail(sessions: sessionmaker[Session], job_id: str, worker: str, error: JobError) -> str:
    with sessions() as s:
        done = crud.fail_job(s, job_id, error, worker=worker)
    return "failed" if done else "lost"


def _retry_later(
    sessions: sessionmaker[Session], job_id: str, worker: str, exc: BaseException,
    policy: RunPolicy, requeue: Requeue | None,
) -> str:  # fmt: skip
    """Give the lease back and queue the job again; its attempts bound the retries."""
    reason = f"a transient error: {type(exc).__name__}: {str(exc)[:400]}"
    log.warning("job %s: %s; it will be retried", job_id, reason)
    try:
        with sessions() as s:
            released = leases.release_lease(s, job_id, worker, reason)
    except TRANSIENT_ERRORS:
        released = False  # the database is away: the lease runs out on its own
    delay = policy.retry_delay_s
    if not released:
        delay += policy.lease.lease_timeout_s
    _put_back(sessions, requeue, job_id, delay)
    return "retrying"


def _put_back(
    sessions: sessionmaker[Session], requeue: Requeue | None, job_id: str, delay: float
) -> None:
    """Queue the job again after `delay` s; if that fails the reconciler finds it."""
    if requeue is None:
        return
    try:
        requeue(job_id, delay)
        with sessions() as s:
            crud.mark_enqueued(s, job_id)
    except Exception:  # noqa: BLE001 - broker or database away: the reconciler covers it
        log.warning("job %s: could not put it back on the queue", job_id, exc_info=True)
