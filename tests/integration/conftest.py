"""A real service for integration tests: Redis, a Celery worker process, a uvicorn server.

Each test session gets its own home (SQLite file, artifact dir), its own Redis database number
and its own queue traffic, so runs never see each other's jobs.
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
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from reprlab.schemas.jobs import JobError
from reprlab.schemas.recipes import RECIPES
from reprlab.schemas.results import ConditionResult, JobResults, LayerCurve, ModelInfo
from reprlab.server import crud, users
from reprlab.server.auth import hash_api_key
from reprlab.server.config import Settings
from reprlab.server.db import init_db, make_engine, session_factory
from reprlab.server.models import ApiKeyRow
from reprlab.server.storage import ArtifactStore

REDIS_TEST_URL = "redis://127.0.0.1:6379/13"


@dataclass
class Service:
    url: str
    api_key: str
    home: Path
    env: dict[str, str]
    worker: subprocess.Popen[bytes]
    server: subprocess.Popen[bytes]

    def worker_log(self) -> str:
        return (self.home / "worker.log").read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _ensure_redis() -> None:
    if _redis_up():
        return
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
         "--save", "", "--appendonly", "no"],
        check=True,
    )  # fmt: skip
    for _ in range(50):
        if _redis_up():
            return
        time.sleep(0.1)
    pytest.fail("redis-server did not start")


def start_worker(env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    log = open(home / "worker.log", "ab")  # noqa: SIM115 - lives as long as the process
    cmd = [
        sys.executable, "-m", "celery", "-A", "reprlab.worker.celery_app", "worker",
        "--pool", "solo", "--queues", "reprlab", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_server(env: dict[str, str], home: Path, port: int) -> subprocess.Popen[bytes]:
    log = open(home / "server.log", "ab")  # noqa: SIM115
    cmd = [
        sys.executable, "-m", "uvicorn", "reprlab.server.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not become healthy in {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def service(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, model_cache: Path
) -> Iterator[Service]:
    _ensure_redis()
    import redis

    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    home = tmp_path_factory.mktemp("reprlab-home")
    data_root = home / "data"
    data_root.mkdir()
    env = {
        **os.environ,
        "REPRLAB_HOME": str(home),
        "REPRLAB_BROKER_URL": REDIS_TEST_URL,
        "REPRLAB_MODEL_CACHE": str(model_cache),
        "REPRLAB_MODEL_ROOTS": json.dumps([str(tiny_model_dir.parent)]),
        "REPRLAB_DATA_ROOTS": json.dumps([str(data_root)]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("REPRLAB_API_KEY", None)
    key = subprocess.run(
        [sys.executable, "-m", "reprlab.client.cli", "admin", "create-key", "alice", "--quiet"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    port = _free_port()
    worker = start_worker(env, home)
    server = start_server(env, home, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield Service(url=url, api_key=key, home=home, env=env, worker=worker, server=server)
    finally:
        stop(server)
        stop(worker)


# --- an API server with seeded users and jobs, and no worker (fuzzing) -------------------------

REDIS_FUZZ_URL = "redis://127.0.0.1:6379/14"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@dataclass
class ApiServer:
    """A real uvicorn server on a seeded SQLite database (`seed`) whose jobs no worker runs."""

    url: str
    home: Path
    seed: FuzzSeed
    server: subprocess.Popen[bytes]

    def server_log(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")


def _fuzz_results(job_id: str, names: list[str]) -> bytes:
    """A succeeded job's results as a worker writes them (two conditions, two metrics)."""
    layers = [0, 1, 2, 3, 4]
    conditions = [
        ConditionResult(
            name=name, paradigm="icl", n_items=40, layers=layers, k=k, seed=0,
            prompt_tokens_mean=30.0 + 40 * k, demos=[[i % 7] * k for i in range(40)],
            curves=[
                LayerCurve(metric="id_twonn", label="TwoNN ID (discard 10%)", layers=layers,
                           values=[3.0, 7.5, None, 6.25, 5.0], summary={"auc": 0.5}),
                LayerCurve(metric="id_gride", label="Gride ID", params={"n1": 4, "n2": 8},
                           layers=layers, values=[2.5, 6.0, 6.5, 5.5, 4.0],
                           summary={"auc": 0.4, "max": None}),
            ],
            activations_artifact=f"activations/{name}.safetensors",
        )
        for name, k in (("zero-shot", 0), ("icl-2", 2))
    ]  # fmt: skip
    model = ModelInfo(name="tiny", resolved="/models/tiny", n_layers=4, hidden_size=64,
                      dtype="float32", device="cpu")  # fmt: skip
    results = JobResults(job_id=job_id, model=model, conditions=conditions, artifacts=names)
    return results.model_dump_json().encode()


@dataclass
class FuzzSeed:
    """What `seed_fuzz_database` wrote: an admin and a member (the callers) and their keys; a
    third user, the victim, whose keys admin routes may revoke; one of the member's jobs in
    each state, the succeeded one with results and artifacts."""

    admin: str  # user names
    member: str
    victim: str
    admin_key: str
    member_key: str
    own_key_ids: list[int]  # the admin's and the member's keys
    victim_key_ids: list[int]
    jobs: dict[str, str]  # state -> id of the member's job in that state
    artifacts: list[str]  # names of the succeeded job's artifacts


def seed_fuzz_database(home: Path) -> FuzzSeed:
    """Users, keys and one job in each state, written straight to the server's database."""
    settings = Settings(home=home)
    engine = make_engine(settings.database_url)
    init_db(engine)
    store = ArtifactStore(settings.artifact_url)
    spec = RECIPES["icl-vs-sft"].job_spec()
    jobs: dict[str, str] = {}
    try:
        with session_factory(engine)() as s:
            victim_keys = [users.create_api_key(s, "fuzz-victim", label=f"v{i}") for i in range(3)]
            admin = users.create_api_key(s, "fuzz-admin", role=users.Role.ADMIN, label="fuzz")
            member = users.create_api_key(s, "fuzz-member", label="fuzz")
            id_by_hash = dict(s.execute(select(ApiKeyRow.key_hash, ApiKeyRow.id)).tuples().all())
            key_ids = {key: id_by_hash[hash_api_key(key)] for key in [*victim_keys, admin, member]}
            for state in ("queued", "running", "cancel-requested", "succeeded", "failed"):
                jobs[state] = crud.create_job(s, "fuzz-member", spec).id
                if state != "queued":
                    crud.start_job(s, jobs[state])
            crud.request_cancel(s, jobs["cancel-requested"])
            error = JobError(type="SpecError", message="n_train < k", hint="lower k")
            crud.fail_job(s, jobs["failed"], error)
            job_id = jobs["succeeded"]
            files = {
                "plots/id_twonn.png": PNG,
                "activations/zero-shot.safetensors": b"\x02\x00\x00\x00\x00\x00\x00\x00{}",
            }
            names = ["results.json", *files]
            files["results.json"] = _fuzz_results(job_id, names)
            keys = {name: f"jobs/{job_id}/{name}" for name in files}
            for name, data in files.items():
                store.put_bytes(keys[name], data)
            crud.finish_job(s, job_id, results_key=keys["results.json"], artifacts=keys)
    finally:
        engine.dispose()
    return FuzzSeed(
        admin="fuzz-admin", member="fuzz-member", victim="fuzz-victim", admin_key=admin,
        member_key=member, own_key_ids=[key_ids[admin], key_ids[member]],
        victim_key_ids=[key_ids[k] for k in victim_keys], jobs=jobs, artifacts=names,
    )  # fmt: skip


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """uvicorn on a seeded SQLite database, its broker on Redis db 14 (flushed before and
    after); no worker runs, so submitted jobs stay queued.

    The rate limit and the queue quota are raised out of reach (so a long run of requests is
    not refused wholesale) and the reconciler is off (so the seeded jobs keep their states).
    """
    _ensure_redis()
    import redis

    broker = redis.Redis.from_url(REDIS_FUZZ_URL)
    broker.flushdb()
    home = tmp_path_factory.mktemp("reprlab-fuzz")
    seed = seed_fuzz_database(home)
    env = {
        **os.environ,
        "REPRLAB_HOME": str(home),
        "REPRLAB_BROKER_URL": REDIS_FUZZ_URL,
        "REPRLAB_RATE_LIMIT_PER_S": "100000",
        "REPRLAB_RATE_LIMIT_BURST": "100000",
        "REPRLAB_MAX_QUEUED_JOBS": "100000",
        "REPRLAB_RECONCILE_INTERVAL_S": "0",
    }
    env.pop("REPRLAB_DATABASE_URL", None)
    env.pop("REPRLAB_ARTIFACT_URL", None)
    port = _free_port()
    server = start_server(env, home, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        yield ApiServer(url=url, home=home, seed=seed, server=server)
    finally:
        stop(server)
        broker.flushdb()
        broker.close()
