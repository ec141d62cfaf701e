"""Job database operations on real SQLite and real PostgreSQL: keys, jobs, state transitions."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from reprlab.schemas.jobs import JobError, JobStatus, Progress, StageRecord
from reprlab.schemas.specs import JobSpec
from reprlab.server import crud, leases, users
from reprlab.server.auth import key_from_headers
from reprlab.server.models import ApiKeyRow


def _spec(name: str = "crud test") -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": name,
            "model": {"name": "smollm2-135m-instruct"},
            "dataset": {"name": "sentiment", "n_eval": 20, "n_train": 10},
            "conditions": [{"name": "zero-shot", "k": 0}, {"name": "icl-2", "k": 2}],
        }
    )


def test_api_key_is_stored_hashed_and_authenticates(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        key = users.create_api_key(s, "alice")
        other = users.create_api_key(s, "bob")
        assert key.startswith("rl_") and len(key) > 40 and key != other
        stored = s.scalars(select(ApiKeyRow.key_hash)).all()
        assert key not in stored and all(len(h) == 64 for h in stored)
        assert users.authenticate(s, key) == users.Caller("alice", users.Role.MEMBER, 1)
        bob = users.authenticate(s, other)
        assert bob is not None and bob.name == "bob" and not bob.is_admin
        assert users.authenticate(s, key + "x") is None
        assert users.authenticate(s, "") is None
        for bad in ["", "  ", "x" * 129]:
            with pytest.raises(ValueError, match="invalid user name"):
                users.create_api_key(s, bad)


def test_key_is_read_from_bearer_then_x_api_key() -> None:
    assert key_from_headers("Bearer rl_a", "rl_b") == "rl_a"
    assert key_from_headers("bearer  rl_a ", None) == "rl_a"
    assert key_from_headers("Basic abc", " rl_b ") == "rl_b"
    assert key_from_headers("Bearer ", None) is None and key_from_headers(None, "") is None


def test_create_get_and_owner_filter(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        job = crud.create_job(s, "alice", _spec())
    assert job.status == JobStatus.QUEUED and job.owner == "alice" and job.name == "crud test"
    assert len(job.id) == 32 and job.progress.fraction == 0.0 and job.stages == []
    with sessions() as s:
        again = crud.get_job(s, job.id)
        assert again is not None and again.spec == _spec()
        assert again.created_at.tzinfo is not None
        assert again.created_at.utcoffset() == UTC.utcoffset(None)
        assert crud.get_job(s, job.id, owner="alice") is not None
        assert crud.get_job(s, job.id, owner="bob") is None
        assert crud.get_job(s, "nope") is None


def test_list_jobs_newest_first_with_filters(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        ids = [crud.create_job(s, "alice", _spec(f"j{i}")).id for i in range(5)]
        crud.create_job(s, "bob", _spec("bob's"))
        crud.request_cancel(s, ids[1])
        page = crud.list_jobs(s, "alice", status=None, limit=50, offset=0)
        assert [j.id for j in page.jobs] == ids[::-1] and page.total == 5
        second = crud.list_jobs(s, "alice", status=None, limit=2, offset=2)
        assert [j.id for j in second.jobs] == ids[::-1][2:4] and second.total == 5
        cancelled = crud.list_jobs(s, "alice", status=JobStatus.CANCELLED, limit=50, offset=0)
        assert [j.id for j in cancelled.jobs] == [ids[1]] and cancelled.total == 1
        assert crud.list_jobs(s, None, status=None, limit=50, offset=0).total == 6


def test_cancel_queued_job_then_start_is_refused(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        job_id = crud.create_job(s, "alice", _spec()).id
        cancelled = crud.request_cancel(s, job_id)
        assert cancelled.status == JobStatus.CANCELLED and cancelled.finished_at is not None
        assert crud.start_job(s, job_id) is None
        assert crud.get_job(s, job_id).status == JobStatus.CANCELLED  # type: ignore[union-attr]
        with pytest.raises(crud.JobConflict, match="cancelled"):
            crud.request_cancel(s, job_id)
        with pytest.raises(crud.JobNotFound):
            crud.request_cancel(s, "no-such-job")


def test_running_job_lifecycle_to_success(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        created = crud.create_job(s, "alice", _spec(), time_limit_s=600)
        job_id = created.id
        assert (created.attempts, created.time_limit_s) == (0, 600)
        assert crud.start_job(s, job_id) == _spec()
        started = crud.get_job(s, job_id)
        assert started is not None and (started.attempts, started.time_limit_s) == (1, 600)
        # A task delivered again while the first worker's lease is fresh must not run it twice
        # (takeovers of stale leases: tests/unit/test_runner.py).
        assert crud.start_job(s, job_id, worker="another") is None
        crud.update_progress(s, job_id, Progress(stage="extract:icl-2", fraction=0.4, message="m"))
        crud.append_stage(s, job_id, StageRecord(name="data", outcome="done", seconds=0.1))
        crud.append_stage(s, job_id, StageRecord(name="extract:icl-2", outcome="cached", seconds=0))
        running = crud.get_job(s, job_id)
        assert running is not None and running.status == JobStatus.RUNNING
        assert running.started_at is not None and running.progress.stage == "extract:icl-2"
        assert [r.name for r in running.stages] == ["data", "extract:icl-2"]
        artifacts = {"results.json": f"jobs/{job_id}/results.json", "plots/x.png": "jobs/p.png"}
        crud.finish_job(s, job_id, results_key=artifacts["results.json"], artifacts=artifacts)
        done = crud.get_job(s, job_id)
        assert done is not None and done.status == JobStatus.SUCCEEDED
        assert done.progress.fraction == 1.0 and done.finished_at is not None
        assert crud.artifact_key(s, job_id, "plots/x.png") == "jobs/p.png"
        assert crud.artifact_key(s, job_id, "nope.png") is None
        assert crud.results_key(s, job_id) == f"jobs/{job_id}/results.json"
        # Finished jobs neither restart, nor cancel, nor fail afterwards.
        assert crud.start_job(s, job_id) is None
        with pytest.raises(crud.JobConflict, match="succeeded"):
            crud.request_cancel(s, job_id)
        crud.fail_job(s, job_id, JobError(type="X", message="late"))
        assert crud.get_job(s, job_id).status == JobStatus.SUCCEEDED  # type: ignore[union-attr]


def test_cancel_running_job_sets_flag_until_worker_stops(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        job_id = crud.create_job(s, "alice", _spec()).id
        crud.start_job(s, job_id)
        assert not crud.is_cancel_requested(s, job_id)
        job = crud.request_cancel(s, job_id)
        assert job.status == JobStatus.RUNNING
        assert crud.is_cancel_requested(s, job_id)
        crud.mark_cancelled(s, job_id)
        assert crud.get_job(s, job_id).status == JobStatus.CANCELLED  # type: ignore[union-attr]


def test_redelivered_task_of_cancel_requested_job_ends_it(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        job_id = crud.create_job(s, "alice", _spec()).id
        crud.start_job(s, job_id)
        crud.request_cancel(s, job_id)
        # The worker died before it saw the flag; the redelivered task must not rerun the job.
        later = datetime.now(UTC) + timedelta(minutes=5)  # the dead worker's lease is stale
        claim = leases.claim_job(s, job_id, worker="next", now=later)
        assert claim.outcome is leases.ClaimOutcome.ENDED
        assert crud.get_job(s, job_id).status == JobStatus.CANCELLED  # type: ignore[union-attr]


def test_fail_job_keeps_the_error(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        job_id = crud.create_job(s, "alice", _spec()).id
        crud.start_job(s, job_id)
        crud.fail_job(s, job_id, JobError(type="SpecError", message="k too big", hint="lower k"))
        job = crud.get_job(s, job_id)
        assert job is not None and job.status == JobStatus.FAILED and job.finished_at is not None
        assert job.error == JobError(type="SpecError", message="k too big", hint="lower k")
        assert crud.start_job(s, "unknown-id") is None


def test_cancel_and_start_race_has_one_winner(sessions: sessionmaker[Session]) -> None:
    """Cancel and start hitting the same queued job at once: the outcomes are consistent."""
    with sessions() as s:
        ids = [crud.create_job(s, "alice", _spec()).id for _ in range(12)]

    def race(job_id: str) -> tuple[bool, JobStatus]:
        barrier = threading.Barrier(2)

        def start() -> bool:
            barrier.wait()
            with sessions() as s:
                return crud.start_job(s, job_id) is not None

        def cancel() -> JobStatus:
            barrier.wait()
            with sessions() as s:
                return crud.request_cancel(s, job_id).status

        with ThreadPoolExecutor(2) as pool:
            started, cancelled = pool.submit(start), pool.submit(cancel)
            return started.result(), cancelled.result()

    for job_id in ids:
        started, status_after_cancel = race(job_id)
        with sessions() as s:
            job = crud.get_job(s, job_id)
            assert job is not None
            if started:  # the worker won: the job runs and must see the cancel flag
                assert status_after_cancel == JobStatus.RUNNING
                assert job.status == JobStatus.RUNNING and crud.is_cancel_requested(s, job_id)
            else:  # the cancel won: the job never runs
                assert status_after_cancel == JobStatus.CANCELLED
                assert job.status == JobStatus.CANCELLED and job.started_at is None
