"""Leases, takeovers, the running quota and the job runner.

The lease tests run on real SQLite and PostgreSQL. The runner tests run the real pipeline on
the tiny random Llama in this process, with a real SQLite job database and artifact store: a
cancel or the time limit stops the job between batches and frees its model; a transient error
gives the lease back and puts the job on the queue again.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from reprlab.schemas.jobs import JobError, JobStatus
from reprlab.schemas.specs import JobSpec, ModelRef
from reprlab.server import crud, leases, users
from reprlab.server.db import init_db, make_engine, session_factory
from reprlab.server.leases import ClaimOutcome, LeasePolicy
from reprlab.server.models import JobRow, utcnow
from reprlab.server.storage import ArtifactStore
from reprlab.worker.models import LoadedModel, ModelCache
from reprlab.worker.runner import RunPolicy, run_stored_job, worker_id

POLICY = LeasePolicy(lease_timeout_s=30, max_attempts=3)
LONG_AGO = timedelta(minutes=10)


def _spec(**overrides: Any) -> JobSpec:
    data: dict[str, Any] = {
        "model": {"name": "smollm2-135m-instruct"},
        "dataset": {"name": "sentiment", "n_eval": 20, "n_train": 10},
        "conditions": [{"name": "zero-shot", "k": 0}],
    }
    return JobSpec.model_validate({**data, **overrides})


def _job(sessions: sessionmaker[Session], owner: str = "alice", **kw: Any) -> str:
    with sessions() as s:
        return crud.create_job(s, owner, _spec(), **kw).id


def _claim(sessions: sessionmaker[Session], job_id: str, worker: str, **kw: Any) -> leases.Claim:
    with sessions() as s:
        return leases.claim_job(s, job_id, worker=worker, policy=kw.pop("policy", POLICY), **kw)


def _row(sessions: sessionmaker[Session], job_id: str) -> JobRow:
    with sessions() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        return row


# --- leases -------------------------------------------------------------------------------------


def test_fresh_lease_drops_a_second_delivery_and_a_stale_one_is_taken_over(
    sessions: sessionmaker[Session],
) -> None:
    job_id = _job(sessions)
    first = _claim(sessions, job_id, "w1", now=utcnow() - LONG_AGO)
    assert first.outcome is ClaimOutcome.RUN and first.attempt == 1 and first.spec == _spec()
    # w1 renews: its lease is fresh and a redelivered message is dropped.
    with sessions() as s:
        assert leases.renew_lease(s, job_id, "w1")
    held = _claim(sessions, job_id, "w2")
    assert held.outcome is ClaimOutcome.HELD and "w1" in held.detail
    # w1 dies: its lease goes stale and w2 takes the job over.
    later = utcnow() + timedelta(seconds=POLICY.lease_timeout_s + 1)
    taken = _claim(sessions, job_id, "w2", now=later)
    assert taken.outcome is ClaimOutcome.RUN and taken.attempt == 2
    row = _row(sessions, job_id)
    assert row.worker == "w2" and row.attempts == 2 and row.status == "running"
    assert row.stages[-1]["name"] == "attempt-1" and row.stages[-1]["outcome"] == "interrupted"
    assert "w1 stopped renewing its lease" in row.stages[-1]["detail"]
    # w1 comes back after all: every write it makes is refused, so it cannot clobber w2's work.
    with sessions() as s:
        assert not leases.renew_lease(s, job_id, "w1")
        assert not crud.finish_job(s, job_id, results_key="x", artifacts={}, worker="w1")
        assert not crud.fail_job(s, job_id, JobError(type="X", message="late"), worker="w1")
        assert not crud.mark_cancelled(s, job_id, worker="w1")
        assert crud.finish_job(s, job_id, results_key="r", artifacts={"results.json": "r"},
                               worker="w2")  # fmt: skip
    assert _row(sessions, job_id).status == "succeeded"


def _race(n: int, action: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return action(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_racing_takers_of_a_stale_lease_have_one_winner(sessions: sessionmaker[Session]) -> None:
    for _ in range(5):
        job_id = _job(sessions)
        _claim(sessions, job_id, "dead", now=utcnow() - LONG_AGO)
        outcomes = _race(4, lambda i, j=job_id: _claim(sessions, j, f"taker-{i}").outcome)
        assert sorted(outcomes) == sorted([ClaimOutcome.RUN] + [ClaimOutcome.HELD] * 3)
        row = _row(sessions, job_id)
        assert row.attempts == 2 and row.worker is not None and row.worker.startswith("taker-")
        assert [r["name"] for r in row.stages] == ["attempt-1"]  # recorded once


def test_racing_starts_of_a_queued_job_have_one_winner(sessions: sessionmaker[Session]) -> None:
    for _ in range(5):
        job_id = _job(sessions)
        outcomes = _race(4, lambda i, j=job_id: _claim(sessions, j, f"w{i}").outcome)
        assert outcomes.count(ClaimOutcome.RUN) == 1
        assert _row(sessions, job_id).attempts == 1


def test_worker_deaths_end_the_job_failed_after_max_attempts(
    sessions: sessionmaker[Session],
) -> None:
    policy = LeasePolicy(lease_timeout_s=30, max_attempts=2)
    job_id = _job(sessions)
    t = utcnow() - LONG_AGO
    assert _claim(sessions, job_id, "w1", policy=policy, now=t).attempt == 1
    assert _claim(sessions, job_id, "w2", policy=policy, now=t + timedelta(minutes=1)).attempt == 2
    ended = _claim(sessions, job_id, "w3", policy=policy)
    assert ended.outcome is ClaimOutcome.ENDED
    with sessions() as s:
        job = crud.get_job(s, job_id)
    assert job is not None and job.status == JobStatus.FAILED and job.error is not None
    assert job.error.type == "AttemptsExhausted"
    assert "started 2 times (max_attempts=2)" in job.error.message
    assert "its worker w2 stopped renewing its lease" in job.error.message
    assert _claim(sessions, job_id, "w4", policy=policy).outcome is ClaimOutcome.GONE


def test_stale_job_with_a_cancel_or_past_its_deadline_is_ended_not_rerun(
    sessions: sessionmaker[Session],
) -> None:
    cancelled = _job(sessions)
    _claim(sessions, cancelled, "w1", now=utcnow() - LONG_AGO)
    with sessions() as s:
        assert crud.request_cancel(s, cancelled).status == JobStatus.RUNNING
    assert _claim(sessions, cancelled, "w2").outcome is ClaimOutcome.ENDED
    assert _row(sessions, cancelled).status == "cancelled"

    overdue = _job(sessions, time_limit_s=60)
    _claim(sessions, overdue, "w1", now=utcnow() - LONG_AGO)
    assert _claim(sessions, overdue, "w2").outcome is ClaimOutcome.ENDED
    with sessions() as s:
        job = crud.get_job(s, overdue)
    assert job is not None and job.status == JobStatus.FAILED and job.error is not None
    assert job.error.type == "TimeLimitExceeded" and "time limit of 60 s" in job.error.message


def test_released_lease_is_taken_over_at_once_with_its_reason(
    sessions: sessionmaker[Session],
) -> None:
    job_id = _job(sessions)
    _claim(sessions, job_id, "w1")
    with sessions() as s:
        assert not leases.release_lease(s, job_id, "someone-else", "no")
        assert leases.release_lease(s, job_id, "w1", "a transient error: OperationalError: gone")
    taken = _claim(sessions, job_id, "w2")  # no lease timeout to wait for
    assert taken.outcome is ClaimOutcome.RUN and taken.attempt == 2
    row = _row(sessions, job_id)
    assert [r["detail"] for r in row.stages] == ["a transient error: OperationalError: gone"]


def test_running_quota_holds_under_racing_workers(sessions: sessionmaker[Session]) -> None:
    ids = [_job(sessions) for _ in range(6)]
    _job(sessions, owner="bob")
    outcomes = _race(6, lambda i: _claim(sessions, ids[i], f"w{i}", max_running=2).outcome)
    assert outcomes.count(ClaimOutcome.RUN) == 2 and outcomes.count(ClaimOutcome.BUSY) == 4
    busy = [j for j, o in zip(ids, outcomes, strict=True) if o is ClaimOutcome.BUSY]
    detail = _claim(sessions, busy[0], "w9", max_running=2).detail
    assert "alice already has 2 running jobs (max_running_jobs=2)" in detail
    # One of alice's jobs ends: one more may start.
    running = [j for j, o in zip(ids, outcomes, strict=True) if o is ClaimOutcome.RUN]
    with sessions() as s:
        crud.fail_job(s, running[0], JobError(type="X", message="done"))
    assert _claim(sessions, busy[0], "w9", max_running=2).outcome is ClaimOutcome.RUN
    assert _claim(sessions, busy[1], "w9", max_running=2).outcome is ClaimOutcome.BUSY


def test_user_override_of_the_running_quota(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        users.ensure_user(s, "carol").max_running_jobs = 1
        s.commit()
    a, b = _job(sessions, owner="carol"), _job(sessions, owner="carol")
    assert _claim(sessions, a, "w1", max_running=5).outcome is ClaimOutcome.RUN
    assert _claim(sessions, b, "w2", max_running=5).outcome is ClaimOutcome.BUSY


# --- the runner on the tiny model ----------------------------------------------------------------


class WatchedCache(ModelCache):
    """The real model cache, remembering a weak reference to every model it loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[weakref.ref[Any]] = []

    def get(self, ref: ModelRef, *, cache_dir: Path, allowed_roots: Any) -> LoadedModel:
        loaded = super().get(ref, cache_dir=cache_dir, allowed_roots=allowed_roots)
        self.refs.append(weakref.ref(loaded.model))
        return loaded


@pytest.fixture()
def runtime(tmp_path: Path, tiny_model_dir: Path) -> Iterator[dict[str, Any]]:
    """What `run_stored_job` needs, on SQLite (the lease tests above cover PostgreSQL)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db' / 'reprlab.db'}")
    init_db(engine)
    yield {
        "sessions": session_factory(engine),
        "store": ArtifactStore(str(tmp_path / "artifacts")),
        "model_cache": tmp_path / "models",
        "data_roots": [],
        "model_roots": [tiny_model_dir.parent],
    }
    engine.dispose()


def _tiny_job(
    sessions: sessionmaker[Session], model_dir: Path, n_eval: int = 16, batch_size: int = 16,
    **kw: Any,
) -> str:  # fmt: skip
    """A job on the tiny model: quick by default, many small batches for a job to stop."""
    spec = JobSpec.model_validate({
        "model": {"name": str(model_dir), "device": "cpu"},
        "dataset": {"name": "sentiment", "n_eval": n_eval, "n_train": 20, "seed": 3},
        "conditions": [{"name": "icl-4", "k": 4}],
        "extraction": {"layers": "all", "batch_size": batch_size},
        "metrics": [{"name": "id_twonn"}],
    })  # fmt: skip
    with sessions() as s:
        return crud.create_job(s, "alice", spec, **kw).id


def _when_extracting(sessions: sessionmaker[Session], job_id: str, act: Callable[[], None]) -> Any:
    """A thread that calls `act` once the job reports an extraction batch; returns when."""
    at: dict[str, float] = {}

    def watch() -> None:
        for _ in range(2000):
            with sessions() as s:
                job = crud.get_job(s, job_id)
            if job is not None and job.progress.stage.startswith("extract:"):
                at["t"] = time.monotonic()
                act()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, at


def test_cancel_stops_a_running_job_between_batches_and_frees_its_model(
    runtime: dict[str, Any], tiny_model_dir: Path
) -> None:
    sessions = runtime["sessions"]
    job_id = _tiny_job(sessions, tiny_model_dir, n_eval=4000, batch_size=2)
    models = WatchedCache()

    def cancel() -> None:
        with sessions() as s:
            crud.request_cancel(s, job_id)

    thread, at = _when_extracting(sessions, job_id, cancel)
    outcome = run_stored_job(job_id, models=models, **runtime)
    stopped = time.monotonic()
    thread.join()
    assert outcome == "cancelled" and stopped - at["t"] < 3.0
    row = _row(sessions, job_id)
    assert row.status == "cancelled" and row.progress["stage"] == "cancelled"
    assert "extract:icl-4" not in [r["name"] for r in row.stages]  # never finished
    assert not runtime["store"]._fs.find(runtime["store"]._root)  # nothing half-written
    gc.collect()
    assert models.loaded is None and models.refs and all(r() is None for r in models.refs)


def test_time_limit_ends_the_job_failed_with_time_limit_exceeded(
    runtime: dict[str, Any], tiny_model_dir: Path
) -> None:
    sessions = runtime["sessions"]
    job_id = _tiny_job(sessions, tiny_model_dir, n_eval=4000, batch_size=2, time_limit_s=2)
    start = time.monotonic()
    assert run_stored_job(job_id, **runtime) == "failed"
    assert time.monotonic() - start < 10
    with sessions() as s:
        job = crud.get_job(s, job_id)
    assert job is not None and job.error is not None
    assert job.error.type == "TimeLimitExceeded" and "time limit of 2 s" in job.error.message


def test_a_worker_that_lost_its_lease_stops_and_writes_nothing(
    runtime: dict[str, Any], tiny_model_dir: Path
) -> None:
    sessions = runtime["sessions"]
    job_id = _tiny_job(sessions, tiny_model_dir, n_eval=4000, batch_size=2)

    def steal() -> None:  # what a takeover does once this worker's lease looked stale
        with sessions() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(worker="thief"))
            s.commit()

    thread, _ = _when_extracting(sessions, job_id, steal)
    policy = RunPolicy(heartbeat_interval_s=0.2)
    assert run_stored_job(job_id, policy=policy, worker="victim", **runtime) == "lost"
    thread.join()
    row = _row(sessions, job_id)
    assert row.status == "running" and row.worker == "thief"


class FlakyStore(ArtifactStore):
    """A real store whose first write fails as if the network to it dropped."""

    failures = 1

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionResetError("connection to the artifact store reset by peer")
        super().put_bytes(key, data)


def test_transient_error_gives_the_lease_back_and_requeues(
    runtime: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    sessions = runtime["sessions"]
    runtime["store"] = FlakyStore(str(tmp_path / "flaky"))
    job_id = _tiny_job(sessions, tiny_model_dir)
    requeued: list[tuple[str, float]] = []
    policy = RunPolicy(retry_delay_s=7.0)

    def requeue(j: str, delay: float) -> None:
        requeued.append((j, delay))

    outcome = run_stored_job(job_id, policy=policy, requeue=requeue, **runtime)
    assert outcome == "retrying" and requeued == [(job_id, 7.0)]
    row = _row(sessions, job_id)
    assert row.status == "running" and row.worker is None and row.attempts == 1
    assert "ConnectionResetError" in row.stages[-1]["detail"]
    # The requeued delivery takes it over at once and finishes it, reusing nothing lost.
    assert run_stored_job(job_id, policy=policy, requeue=requeue, **runtime) == "succeeded"
    row = _row(sessions, job_id)
    assert row.status == "succeeded" and row.attempts == 2 and row.worker == worker_id()


def test_ordinary_error_fails_at_once_and_quota_defers(
    runtime: dict[str, Any], tiny_model_dir: Path
) -> None:
    sessions = runtime["sessions"]
    bad = _tiny_job(sessions, tiny_model_dir)
    with sessions() as s:
        s.execute(update(JobRow).where(JobRow.id == bad).values(
            spec={**_row(sessions, bad).spec, "model": {"name": "/nowhere/model"}}
        ))  # fmt: skip
        s.commit()
    requeued: list[tuple[str, float]] = []
    policy = RunPolicy(max_running_jobs=1, quota_retry_s=11.0)
    outcome = run_stored_job(bad, policy=policy, requeue=lambda j, d: requeued.append((j, d)),
                             **runtime)  # fmt: skip
    assert outcome == "failed" and requeued == []
    assert _row(sessions, bad).error["type"] == "ModelLoadError"  # type: ignore[index]

    busy, waiting = _tiny_job(sessions, tiny_model_dir), _tiny_job(sessions, tiny_model_dir)
    _claim(sessions, busy, "elsewhere")
    before = _row(sessions, waiting).enqueued_at
    outcome = run_stored_job(waiting, policy=policy, requeue=lambda j, d: requeued.append((j, d)),
                             **runtime)  # fmt: skip
    assert outcome == "deferred" and requeued == [(waiting, 11.0)]
    row = _row(sessions, waiting)
    assert row.status == "queued" and row.attempts == 0
    assert isinstance(before, datetime) and row.enqueued_at is not None
    assert row.enqueued_at > before


def test_remote_code_untrusted_after_submission_fails_before_any_model_work(
    runtime: dict[str, Any], tiny_model_dir: Path
) -> None:
    sessions = runtime["sessions"]
    name = str(tiny_model_dir)
    with sessions() as s:
        users.trust_model(s, name, actor="admin")
        s.commit()
    spec = JobSpec.model_validate({
        "model": {"name": name, "device": "cpu", "trust_remote_code": True},
        "dataset": {"name": "sentiment", "n_eval": 16, "n_train": 20, "seed": 3},
        "conditions": [{"name": "zs", "k": 0}],
        "extraction": {"layers": [1]},
    })  # fmt: skip
    with sessions() as s:
        trusted, untrusted = (crud.create_job(s, "alice", spec).id for _ in range(2))
    assert run_stored_job(trusted, **runtime) == "succeeded"
    with sessions() as s:
        users.untrust_model(s, name, actor="admin")
        s.commit()
    models = ModelCache()
    assert run_stored_job(untrusted, models=models, **runtime) == "failed"
    error = _row(sessions, untrusted).error
    assert error is not None and error["type"] == "ModelNotTrusted"
    assert "no longer a trusted model" in error["message"]
    assert models.loaded is None
