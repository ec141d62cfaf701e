"""Faults with real processes: SIGKILLed workers, Redis restarted empty, uvicorn restarted, a
worker that keeps dying, cancel and time limit of running jobs.

The module runs its own service on the tiny random Llama: a redis-server on a free port (so it
can be restarted empty without touching the developers' Redis), uvicorn (whose reconciler runs
every 0.5 s) and Celery workers started and killed by the tests. Leases are short (heartbeat
0.5 s, timeout 4 s) so a dead worker's job is taken over within seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import start_server, start_worker, stop, wait_healthy

from reprlab.client import Client
from reprlab.client._exceptions import (
    APIConnectionError,
    JobFailedError,
    UnprocessableEntityError,
)
from reprlab.schemas import Job, JobStatus
from reprlab.server.storage import ArtifactStore

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
CONTENT_DIRS = ("activations", "adapters", "train-state", "behaviour")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FaultService:
    home: Path
    env: dict[str, str]
    port: int
    redis_port: int
    api_key: str = ""
    server: subprocess.Popen[bytes] | None = None
    redis_proc: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port)

    def client(self) -> Client:
        return Client(base_url=self.url, api_key=self.api_key, timeout=5, max_retries=2)

    def start_redis(self) -> None:
        cmd = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no"]  # fmt: skip
        self.redis_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                self.redis.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def restart_redis(self) -> None:
        """Stop redis-server and start it again, empty (no persistence)."""
        if self.redis_proc is not None:
            self.redis_proc.kill()
            self.redis_proc.wait()
        self.start_redis()

    def start_server(self) -> None:
        self.server = start_server(self.env, self.home, self.port)
        wait_healthy(self.url)

    def stop_server(self) -> None:
        if self.server is not None:
            stop(self.server)

    def start_worker(self, *, dying_at: str | None = None, **env: str) -> None:
        full = {**self.env, **env}
        if dying_at is None:
            self.workers.append(start_worker(full, self.home))
            return
        log = open(self.home / "worker.log", "ab")  # noqa: SIM115 - lives with the process
        cmd = [sys.executable, str(HERE / "dying_worker.py"), dying_at, "-A",
               "reprlab.worker.celery_app", "worker", "--pool", "solo", "--queues", "reprlab",
               "--loglevel", "INFO", "--without-gossip", "--without-mingle",
               "--without-heartbeat"]  # fmt: skip
        self.workers.append(subprocess.Popen(cmd, env=full, stdout=log, stderr=subprocess.STDOUT))

    def kill_workers(self) -> None:
        """SIGKILL every worker: no cleanup, no ack, no goodbye."""
        for proc in self.workers:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        self.workers.clear()

    def live_workers(self) -> int:
        return sum(proc.poll() is None for proc in self.workers)

    def wipe_content(self) -> None:
        """Drop every content-keyed artifact, so the next identical job computes everything."""
        for name in CONTENT_DIRS:
            shutil.rmtree(self.home / "artifacts" / name, ignore_errors=True)

    def artifact_files(self) -> list[Path]:
        return sorted(p for p in (self.home / "artifacts").rglob("*") if p.is_file())

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n" + (self.home / name).read_text(errors="replace")[-6000:]
            for name in ("server.log", "worker.log")
            if (self.home / name).exists()
        )


@pytest.fixture(scope="module")
def faults(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, model_cache: Path
) -> Iterator[FaultService]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    home = tmp_path_factory.mktemp("reprlab-faults")
    redis_port = _free_port()
    env = {
        **os.environ,
        "REPRLAB_HOME": str(home),
        "REPRLAB_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "REPRLAB_MODEL_CACHE": str(model_cache),
        "REPRLAB_MODEL_ROOTS": json.dumps([str(tiny_model_dir.parent)]),
        "REPRLAB_HEARTBEAT_INTERVAL_S": "0.5",
        "REPRLAB_LEASE_TIMEOUT_S": "4",
        "REPRLAB_RECONCILE_INTERVAL_S": "0.5",
        "REPRLAB_REQUEUE_GRACE_S": "2",
        "REPRLAB_MAX_ATTEMPTS": "4",
        "REPRLAB_MAX_JOB_SECONDS": "600",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    for name in ("REPRLAB_API_KEY", "REPRLAB_DATABASE_URL", "REPRLAB_ARTIFACT_URL"):
        env.pop(name, None)
    service = FaultService(home=home, env=env, port=_free_port(), redis_port=redis_port)
    service.api_key = subprocess.run(
        [sys.executable, "-m", "reprlab.client.cli", "admin", "create-key", "faulty", "--quiet"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        service.start_redis()
        service.start_server()
        service.start_worker()
        yield service
    finally:
        service.kill_workers()
        service.stop_server()
        if service.redis_proc is not None:
            service.redis_proc.kill()
            service.redis_proc.wait()


def _icl(model_dir: Path, *, seed: int, n_eval: int = 200, batch_size: int = 4,
         **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "model": {"name": str(model_dir), "device": "cpu"},
        "dataset": {"name": "sentiment", "n_eval": n_eval, "n_train": 40, "seed": seed},
        "conditions": [{"name": "icl-4", "k": 4}],
        "extraction": {"layers": "all", "batch_size": batch_size},
        "metrics": [{"name": "id_twonn"}],
        **extra,
    }


def _sft(steps: int, **extra: Any) -> dict[str, Any]:
    return {
        "paradigm": "sft", "name": "lora", "steps": steps, "batch_size": 4,
        "learning_rate": 1e-2, "lora": {"r": 4}, "save_every": 20, **extra,
    }  # fmt: skip


def _wait_for(client: Client, job_id: str, ok: Callable[[Job], bool], timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.jobs.get(job_id)
        if ok(job):
            return job
        if job.status.finished:
            raise AssertionError(f"job ended as {job.status} ({job.error}) before the condition")
        time.sleep(0.1)
    raise AssertionError(f"timed out; the job is {client.jobs.get(job_id)}")


def _undisturbed(faults: FaultService, spec: dict[str, Any]) -> dict[str, Any]:
    """The results of `spec` run from scratch without any fault (stored work wiped first)."""
    faults.wipe_content()
    client = faults.client()
    job = client.jobs.wait(client.jobs.create(spec).id, timeout=120, poll_interval=0.2,
                           progress=False)  # fmt: skip
    assert job.status == JobStatus.SUCCEEDED, job.error
    return client.jobs.results(job.id).model_dump(exclude={"job_id"})


def _count(job: Job) -> int:
    """The N of a progress message 'step N/M ...' or 'N/M prompts'."""
    word = job.progress.message.removeprefix("step ").split("/")[0]
    return int(word) if word.isdigit() else -1


def test_worker_killed_in_training_and_in_extraction_completes_identically(
    faults: FaultService, tiny_model_dir: Path
) -> None:
    client = faults.client()
    spec = _icl(tiny_model_dir, seed=11, n_eval=120)
    spec["conditions"] = [_sft(60, checkpoints=[20]), *spec["conditions"]]
    reference = client.jobs.wait(client.jobs.create(spec).id, timeout=120, poll_interval=0.2,
                                 progress=False)  # fmt: skip
    expected = client.jobs.results(reference.id).model_dump(exclude={"job_id"})
    faults.wipe_content()

    job = client.jobs.create(spec)
    _wait_for(client, job.id, lambda j: j.progress.stage == "train:lora" and _count(j) >= 30)
    faults.kill_workers()
    # The next worker resumes training and dies at its first batch of extract:icl-4 (a tiny
    # model extracts too fast for a kill from outside to land mid-stage reliably).
    faults.start_worker(dying_at="extract:icl-4")
    assert faults.workers[-1].wait(timeout=120) == -signal.SIGKILL
    faults.kill_workers()
    faults.start_worker()
    done = client.jobs.wait(job.id, timeout=120, poll_interval=0.2, progress=False)

    log = [(s.name, s.outcome, s.detail) for s in done.stages]
    cuts = [i for i, (_, outcome, _) in enumerate(log) if outcome == "interrupted"]
    assert [log[i][0] for i in cuts] == ["attempt-1", "attempt-2"], log
    assert "stopped renewing its lease" in log[cuts[0]][2]
    second, third = log[cuts[0] : cuts[1]], log[cuts[1] :]
    train = next(d for n, o, d in second if n == "train:lora")
    assert train.startswith("resumed at step "), train  # from the last saved training state
    outcomes = {n: o for n, o, _ in third}
    assert outcomes["train:lora"] == "cached"
    assert outcomes["extract:lora"] == outcomes["extract:lora.step20"] == "cached"
    assert outcomes["extract:icl-4"] == "done"
    assert client.jobs.results(done.id).model_dump(exclude={"job_id"}) == expected

    # A worker killed mid-write leaves at most its temporary file: no key names it, and the
    # reconciler's sweep removes it. Then: one file per content key, nothing half-written.
    store = ArtifactStore(f"file://{faults.home / 'artifacts'}")
    leftovers = [p for p in faults.artifact_files() if p.name.startswith(".tmp-")]
    for path in leftovers:
        with pytest.raises(ValueError, match="bad segment"):
            store.exists(str(path.relative_to(faults.home / "artifacts")))
    assert store.sweep_temp(older_than_s=0) == len(leftovers)
    files = [p.relative_to(faults.home / "artifacts") for p in faults.artifact_files()]
    assert not [p for p in files if p.name.startswith(".tmp-")], files
    assert len([p for p in files if p.parts[0] == "activations"]) == 3
    assert sorted(p.name for p in files if p.parts[0] == "adapters") == [
        "step-20.safetensors", "step-60.safetensors",
    ]  # fmt: skip
    for name in ("activations/icl-4.safetensors", "adapters/lora.safetensors"):
        data = faults.client().jobs._t.request("GET", f"/v1/jobs/{done.id}/artifacts/{name}")
        header = json.loads(data.content[8 : 8 + int.from_bytes(data.content[:8], "little")])
        assert header and "__metadata__" in header


def test_redis_restarted_empty_loses_no_job(faults: FaultService, tiny_model_dir: Path) -> None:
    client = faults.client()
    specs = [_icl(tiny_model_dir, seed=21, n_eval=600), _icl(tiny_model_dir, seed=22, n_eval=40)]
    running = client.jobs.create(specs[0])
    _wait_for(client, running.id, lambda j: j.progress.stage.startswith("extract:"))
    queued = client.jobs.create(specs[1])
    assert faults.redis.llen("reprlab") == 1  # its message waits behind the running job
    faults.restart_redis()
    assert faults.redis.dbsize() == 0  # every message and unacked delivery is gone
    results = []
    for job in (running, queued):
        done = client.jobs.wait(job.id, timeout=90, poll_interval=0.2, progress=False)
        assert done.status == JobStatus.SUCCEEDED
        results.append(client.jobs.results(job.id).model_dump(exclude={"job_id"}))
    assert results == [_undisturbed(faults, spec) for spec in specs]


def test_client_wait_survives_an_api_server_restart(
    faults: FaultService, tiny_model_dir: Path
) -> None:
    client = faults.client()
    spec = _icl(tiny_model_dir, seed=31, n_eval=300)
    job = client.jobs.create(spec)
    outcome: dict[str, Any] = {}

    def wait() -> None:
        try:
            outcome["job"] = client.jobs.wait(job.id, timeout=120, poll_interval=0.2,
                                              progress=False)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    waiter = threading.Thread(target=wait)
    waiter.start()
    _wait_for(client, job.id, lambda j: j.status == JobStatus.RUNNING)
    faults.stop_server()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{faults.url}/v1/health")
    time.sleep(3)
    faults.start_server()
    waiter.join(timeout=120)
    assert "error" not in outcome, outcome
    assert outcome["job"].status == JobStatus.SUCCEEDED
    disturbed = faults.client().jobs.results(job.id).model_dump(exclude={"job_id"})
    assert disturbed == _undisturbed(faults, spec)


def test_job_whose_worker_keeps_dying_fails_after_max_attempts(
    faults: FaultService, tiny_model_dir: Path
) -> None:
    client = faults.client()
    faults.kill_workers()
    started = 0
    try:
        job = client.jobs.create(_icl(tiny_model_dir, seed=41, n_eval=80))
        deadline = time.monotonic() + 90
        while not client.jobs.get(job.id).status.finished:
            assert time.monotonic() < deadline, faults.logs()
            if faults.live_workers() == 0:  # a supervisor restarting the worker
                # The claiming worker's bound applies: 2 starts, then the job fails.
                faults.start_worker(dying_at="extract:", REPRLAB_MAX_ATTEMPTS="2")
                started += 1
            time.sleep(0.2)
    finally:
        faults.kill_workers()
        faults.start_worker()
    with pytest.raises(JobFailedError) as err:
        client.jobs.wait(job.id, timeout=5, progress=False)
    error = err.value.job.error
    assert error is not None and error.type == "AttemptsExhausted"
    assert "started 2 times (max_attempts=2)" in error.message
    assert "stopped renewing its lease" in error.message
    assert started == 3  # two died mid-extraction; the third ended the job instead of a rerun


def test_cancel_stops_a_training_job_within_seconds(
    faults: FaultService, tiny_model_dir: Path
) -> None:
    client = faults.client()
    spec = _icl(tiny_model_dir, seed=51)
    spec["conditions"] = [_sft(5000)]
    job = client.jobs.create(spec)
    _wait_for(client, job.id, lambda j: j.progress.stage == "train:lora" and _count(j) >= 5)
    asked = time.monotonic()
    assert client.jobs.cancel(job.id).status == JobStatus.RUNNING  # asked; the worker stops it
    done = _wait_for(client, job.id, lambda j: j.status.finished, timeout=30)
    assert done.status == JobStatus.CANCELLED and time.monotonic() - asked < 5
    assert "train:lora" not in [s.name for s in done.stages]


def test_time_limit_ends_a_running_job_failed(faults: FaultService, tiny_model_dir: Path) -> None:
    client = faults.client()
    with pytest.raises(UnprocessableEntityError) as refused:
        client.jobs.create(_icl(tiny_model_dir, seed=61, time_limit_s=601))
    assert "max_job_seconds = 600" in str(refused.value)

    spec = _icl(tiny_model_dir, seed=61, n_eval=4000, batch_size=2, time_limit_s=3)
    job = client.jobs.create(spec)
    with pytest.raises(JobFailedError) as err:
        client.jobs.wait(job.id, timeout=60, poll_interval=0.2, progress=False)
    failed = err.value.job
    assert failed.error is not None and failed.error.type == "TimeLimitExceeded"
    assert "time limit of 3 s" in failed.error.message
    assert failed.started_at is not None and failed.finished_at is not None
    assert (failed.finished_at - failed.started_at).total_seconds() < 3 + 3


def test_client_wait_gives_up_with_a_clear_error_after_max_unreachable() -> None:
    client = Client(base_url=f"http://127.0.0.1:{_free_port()}", api_key="rl_x", timeout=1,
                    max_retries=0)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(APIConnectionError, match="no answer for [0-9]+ s") as err:
        client.jobs.wait("0123abcd", max_unreachable=1.5, poll_interval=0.1, progress=False)
    assert 1.5 <= time.monotonic() - start < 10
    assert "keeps running on the server" in str(err.value)
