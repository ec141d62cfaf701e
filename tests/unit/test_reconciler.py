"""The reconciler against a real job database (SQLite and PostgreSQL) and a real Redis broker.

Each test module run gets its own redis-server on a free port, so the developers' Redis is never
touched and the broker can be emptied at will (what a Redis restart does). A dead worker's
delivered-but-unacked message is made by a real kombu consumer process that exits without
acking.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from reprlab.schemas.jobs import JobStatus
from reprlab.schemas.specs import JobSpec
from reprlab.server import crud, leases
from reprlab.server.config import Settings
from reprlab.server.leases import LeasePolicy
from reprlab.server.models import JobRow, utcnow
from reprlab.server.queue import QUEUE, CeleryQueue
from reprlab.server.reconciler import ReconcilePolicy, reconcile_once, start_reconciler
from reprlab.server.storage import ArtifactStore

POLICY = ReconcilePolicy(LeasePolicy(lease_timeout_s=30, max_attempts=3), grace_s=20)
LATER = timedelta(seconds=21)  # past the grace period


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A private redis-server (no persistence) on a free port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture()
def broker(broker_url: str) -> redis.Redis:
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    return client


def _spec() -> JobSpec:
    return JobSpec.model_validate({
        "model": {"name": "smollm2-135m-instruct"},
        "dataset": {"name": "sentiment", "n_eval": 20, "n_train": 10},
        "conditions": [{"name": "zero-shot", "k": 0}],
    })  # fmt: skip


def _job(sessions: sessionmaker[Session], **kw: Any) -> str:
    with sessions() as s:
        return crud.create_job(s, "alice", _spec(), **kw).id


def _messages(broker: redis.Redis) -> list[str]:
    """Job ids of the run_job messages waiting in the queue."""
    import base64

    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0]
            for m in broker.lrange(QUEUE, 0, -1)]  # fmt: skip


def _status(sessions: sessionmaker[Session], job_id: str) -> JobStatus:
    with sessions() as s:
        job = crud.get_job(s, job_id)
    assert job is not None
    return job.status


def test_lost_queued_job_is_re_enqueued_once(
    sessions: sessionmaker[Session], broker: redis.Redis, broker_url: str
) -> None:
    queue = CeleryQueue(broker_url)
    lost, waiting, fresh = _job(sessions), _job(sessions), _job(sessions)
    queue.enqueue(waiting)  # its message is still in the queue
    now = utcnow() + LATER
    # Fresh jobs are left alone: their message may be on its way.
    assert reconcile_once(sessions, queue, POLICY, now=utcnow()).requeued == []
    report = reconcile_once(sessions, queue, POLICY, now=now)
    assert report.requeued == [lost, fresh] and not report.ended
    assert sorted(_messages(broker)) == sorted([waiting, lost, fresh])
    # Idempotent: the next round (and another reconciler) finds every message in place.
    assert reconcile_once(sessions, queue, POLICY, now=now + LATER).requeued == []
    broker.delete(QUEUE)  # the broker loses everything (Redis restarted empty)
    again = reconcile_once(sessions, queue, POLICY, now=now + 2 * LATER)
    assert sorted(again.requeued) == sorted([lost, waiting, fresh])


def test_concurrent_reconcilers_enqueue_a_lost_job_once(
    sessions: sessionmaker[Session], broker: redis.Redis, broker_url: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ids = [_job(sessions) for _ in range(4)]
    now = utcnow() + LATER
    with ThreadPoolExecutor(3) as pool:
        reports = list(pool.map(
            lambda _: reconcile_once(sessions, CeleryQueue(broker_url), POLICY, now=now),
            range(3),
        ))  # fmt: skip
    assert sorted(j for r in reports for j in r.requeued) == sorted(ids)
    assert sorted(_messages(broker)) == sorted(ids)


def _dead_consumer_takes(broker_url: str) -> None:
    """A real kombu consumer takes one message without acking it, then dies."""
    code = (
        "import os, sys\n"
        "from kombu import Connection\n"
        "channel = Connection(sys.argv[1]).channel()\n"
        "message = channel.basic_get(sys.argv[2], no_ack=False)\n"
        "os._exit(0 if message is not None else 3)\n"
    )
    subprocess.run([sys.executable, "-c", code, broker_url, QUEUE], check=True, timeout=60)


def test_message_held_by_a_dead_worker_counts_as_lost_after_the_grace(
    sessions: sessionmaker[Session], broker: redis.Redis, broker_url: str
) -> None:
    queue = CeleryQueue(broker_url)
    job_id = _job(sessions)
    queue.enqueue(job_id)
    _dead_consumer_takes(broker_url)
    assert _messages(broker) == [] and broker.hlen("unacked") == 1
    with sessions() as s:  # handed over long ago (e.g. a worker died before starting it)
        crud.mark_enqueued(s, job_id, now=utcnow() - LATER)
    # Just delivered: a live worker may be about to start it.
    assert reconcile_once(sessions, queue, POLICY, now=utcnow()).requeued == []
    assert reconcile_once(sessions, queue, POLICY, now=utcnow() + LATER).requeued == [job_id]
    assert _messages(broker) == [job_id]


def _running(sessions: sessionmaker[Session], ago: timedelta, **kw: Any) -> str:
    job_id = _job(sessions, **kw)
    with sessions() as s:
        crud.mark_enqueued(s, job_id, now=utcnow() - ago)
        claim = leases.claim_job(s, job_id, worker="w1", now=utcnow() - ago)
    assert claim.outcome is leases.ClaimOutcome.RUN
    return job_id


def test_stale_running_jobs_are_re_enqueued_or_ended(
    sessions: sessionmaker[Session], broker: redis.Redis, broker_url: str
) -> None:
    queue = CeleryQueue(broker_url)
    alive = _running(sessions, timedelta(seconds=1))
    dead = _running(sessions, timedelta(minutes=5))
    cancelled = _running(sessions, timedelta(minutes=5))
    with sessions() as s:
        crud.request_cancel(s, cancelled)
    exhausted = _running(sessions, timedelta(minutes=5))
    with sessions() as s:
        s.query(JobRow).filter(JobRow.id == exhausted).update({"attempts": 3})
        s.commit()
    overdue = _running(sessions, timedelta(minutes=5), time_limit_s=60)

    report = reconcile_once(sessions, queue, POLICY)
    assert report.requeued == [dead] and _messages(broker) == [dead]
    assert set(report.ended) == {cancelled, exhausted, overdue}
    assert _status(sessions, alive) == JobStatus.RUNNING
    assert _status(sessions, dead) == JobStatus.RUNNING  # a worker takes it over
    assert _status(sessions, cancelled) == JobStatus.CANCELLED
    with sessions() as s:
        failed = {j: crud.get_job(s, j) for j in (exhausted, overdue)}
    assert failed[exhausted].error.type == "AttemptsExhausted"  # type: ignore[union-attr]
    assert failed[overdue].error.type == "TimeLimitExceeded"  # type: ignore[union-attr]
    # Not enqueued again while its message waits for a worker.
    assert reconcile_once(sessions, queue, POLICY, now=utcnow() + LATER).requeued == []


def test_live_worker_past_its_deadline_is_failed_and_loses_its_lease(
    sessions: sessionmaker[Session], broker: redis.Redis, broker_url: str
) -> None:
    job_id = _running(sessions, timedelta(seconds=70), time_limit_s=60)
    with sessions() as s:
        assert leases.renew_lease(s, job_id, "w1")  # alive, but stuck in one long stage
    # Within the lease's slack past the deadline the worker may still stop it itself.
    assert reconcile_once(sessions, CeleryQueue(broker_url), POLICY).ended == {}
    later = utcnow() + timedelta(seconds=POLICY.lease.lease_timeout_s)
    report = reconcile_once(sessions, CeleryQueue(broker_url), POLICY, now=later)
    assert list(report.ended) == [job_id] and "time limit of 60 s" in report.ended[job_id]
    with sessions() as s:
        assert not leases.renew_lease(s, job_id, "w1")  # so the worker stops at its next batch


def test_broker_down_is_reported_and_nothing_is_marked(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = _job(sessions)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    down = CeleryQueue(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5)
    report = reconcile_once(sessions, down, POLICY, now=utcnow() + LATER)
    assert report.requeued == [] and report.broker_error is not None
    assert "cannot read the job queue" in report.summary()
    with sessions() as s:
        row = s.get(JobRow, job_id)
        assert row is not None and row.enqueued_at is not None
        assert row.enqueued_at < utcnow()  # untouched: the next round tries again


def test_round_sweeps_temporary_files_of_dead_writers(
    sessions: sessionmaker[Session], broker: redis.Redis, broker_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    store = ArtifactStore(str(root))
    store.put_bytes("activations/a.safetensors", b"complete")
    leftover = root / "activations" / ".tmp-0123-b.safetensors"
    leftover.write_bytes(b"half of it")
    old = time.time() - 7200
    os.utime(leftover, (old, old))
    young = root / "activations" / ".tmp-4567-c.safetensors"  # a live writer's
    young.write_bytes(b"being written")
    with pytest.raises(ValueError, match="bad segment"):
        store.get_bytes("activations/.tmp-0123-b.safetensors")  # never readable by key
    policy = ReconcilePolicy(POLICY.lease, POLICY.grace_s, temp_max_age_s=3600)
    report = reconcile_once(sessions, CeleryQueue(broker_url), policy, store=store)
    assert report.temp_removed == 1 and not leftover.exists() and young.exists()
    assert store.get_bytes("activations/a.safetensors") == b"complete"


def test_server_thread_reconciles_and_cli_runs_one_round(
    sessions: sessionmaker[Session], broker: redis.Redis, broker_url: str, tmp_path: Path,
    database_url: str,
) -> None:  # fmt: skip
    settings = Settings(home=tmp_path, database_url=database_url, broker_url=broker_url,
                        reconcile_interval_s=0.2, requeue_grace_s=0.5)  # fmt: skip
    assert start_reconciler(sessions, object(), settings) is None  # type: ignore[arg-type]
    off = settings.model_copy(update={"reconcile_interval_s": 0})
    assert start_reconciler(sessions, CeleryQueue(broker_url), off) is None
    job_id = _job(sessions)
    reconciler = start_reconciler(sessions, CeleryQueue(broker_url), settings)
    assert reconciler is not None
    try:
        deadline = time.monotonic() + 10
        while _messages(broker) != [job_id] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _messages(broker) == [job_id]
    finally:
        reconciler.stop()

    broker.flushdb()
    env = {**os.environ, "REPRLAB_HOME": str(tmp_path), "REPRLAB_DATABASE_URL": database_url,
           "REPRLAB_BROKER_URL": broker_url, "REPRLAB_REQUEUE_GRACE_S": "0.1"}  # fmt: skip
    time.sleep(0.2)
    proc = subprocess.run(
        [sys.executable, "-m", "reprlab.client.cli", "reconcile", "--once"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "re-enqueued 1 jobs, ended 0" in proc.stdout
    assert _messages(broker) == [job_id]
