"""Start and stop a local service (Redis, API server, one worker) for `reprlab up` / `down`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Component:
    """A process `reprlab up` manages: its name (pid and log file stem) and its command."""

    name: str
    command: list[str]


def server_command(host: str, port: int) -> list[str]:
    """The API server (uvicorn with the app factory)."""
    return [sys.executable, "-m", "uvicorn", "reprlab.server.app:create_app", "--factory",
            "--host", host, "--port", str(port), "--log-level", "info"]  # fmt: skip


def worker_command() -> list[str]:
    """One Celery worker, solo pool (no forked CUDA), on the `reprlab` queue."""
    return [sys.executable, "-m", "celery", "-A", "reprlab.worker.celery_app", "worker",
            "--pool", "solo", "--queues", "reprlab", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle"]  # fmt: skip


def run_dir(home: Path) -> Path:
    """`<home>/run`: pid files and logs of the processes `reprlab up` started."""
    path = home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pid_alive(pid: int) -> bool:
    try:  # reap our own exited children first: a zombie still answers kill(pid, 0)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def running_pid(home: Path, name: str) -> int | None:
    """The pid of component `name` if its pid file names a live process."""
    pidfile = run_dir(home) / f"{name}.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def start(home: Path, comp: Component, env: dict[str, str] | None = None) -> int:
    """Start a component detached, logging to `run/<name>.log`; returns its pid."""
    log = open(run_dir(home) / f"{comp.name}.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        comp.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )  # fmt: skip
    (run_dir(home) / f"{comp.name}.pid").write_text(str(proc.pid))
    return proc.pid


def stop(home: Path, name: str, timeout: float = 20.0) -> bool:
    """Stop a component started by `start`; True if one was running."""
    pid = running_pid(home, name)
    (run_dir(home) / f"{name}.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        _signal(pid, signal.SIGKILL)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group `pid` leads (our detached children), else the process alone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def redis_up(host: str = "127.0.0.1", port: int = 6379) -> bool:
    """True if a Redis server answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_redis(host: str = "127.0.0.1", port: int = 6379, pidfile: Path | None = None) -> str:
    """'running' or 'started'; RuntimeError if redis-server is missing or does not start.

    A Redis started here runs in memory only (no snapshots, no AOF) and writes its pid to
    `pidfile` when given, so `stop(home, "redis")` can stop it.
    """
    if redis_up(host, port):
        return "running"
    if shutil.which("redis-server") is None:
        raise RuntimeError("Redis is not running and redis-server is not installed "
                           "(Debian: apt-get install redis-server)")  # fmt: skip
    cmd = ["redis-server", "--daemonize", "yes", "--bind", host, "--port", str(port),
           "--save", "", "--appendonly", "no"]  # fmt: skip
    if pidfile is not None:
        cmd += ["--pidfile", str(pidfile)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"redis-server failed: {(proc.stderr or proc.stdout).strip()}")
    for _ in range(50):
        if redis_up(host, port):
            return "started"
        time.sleep(0.1)
    raise RuntimeError(f"redis-server did not start answering on {host}:{port}")


def healthy(url: str) -> bool:
    """True if `<url>/v1/health` answers 200."""
    try:
        return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(url: str, timeout: float = 60.0, pid: int | None = None) -> bool:
    """Wait for the server to answer; False after `timeout` or as soon as process `pid` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url):
            return True
        if pid is not None and not _pid_alive(pid):
            return False
        time.sleep(0.3)
    return False
