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
