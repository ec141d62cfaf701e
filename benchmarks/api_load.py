"""API load: many clients following their jobs against a real server on PostgreSQL.

Starts uvicorn (`reprlab.server.app:create_app`) on a fresh PostgreSQL schema in the database
`test` at 127.0.0.1:5432 (user postgres, dropped at exit), seeded straight through `crud` with
`--users` users, each with an API key and `--jobs-per-user` jobs of the built-in recipes' specs
in every state (finished ones with a full stage log). Then `--clients` concurrent clients, each
with its own user's key, do for `--seconds` what `client.jobs.wait` does (GET /v1/jobs/{id}
every `poll_interval` of the SDK, 1 s) and, every `--list-every` polls, what `reprlab list`
does (GET /v1/jobs?limit=20&offset=0). Clients start spread over the first interval, each on
its own keep-alive connection, with the SDK's headers.

    python benchmarks/api_load.py --clients 50 --seconds 30 --workers 1

Latency is measured per request, from sending it to having read the whole body. An error is
any non-2xx answer or an exception (a timeout included). Prints p50/p95/p99 per kind of request
and overall, the request rate, and PASS/FAIL against the targets: no errors and overall p99
< 50 ms. No Celery worker is needed: the server's broker is a Redis database of its own
(`--broker-url`, flushed before and after), which only the server's reconciler writes to.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import redis
from sqlalchemy import create_engine, text, update
from sqlalchemy.orm import Session

from reprlab.client.resources.jobs import Jobs
from reprlab.schemas.jobs import JobError, Progress, StageRecord
from reprlab.schemas.recipes import RECIPES
from reprlab.server import crud, users
from reprlab.server.db import init_db, make_engine, session_factory
from reprlab.server.models import JobRow, utcnow
from reprlab.server.queue import CeleryQueue

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BROKER_URL = "redis://127.0.0.1:6379/15"
TARGET_P99_MS = 50.0
SDK_POLL_INTERVAL_S = float(inspect.signature(Jobs.wait).parameters["poll_interval"].default)
LIST_LIMIT = 20  # `reprlab list`'s default page
USER_AGENT = "reprlab-python"  # what the SDK sends
REQUEST_TIMEOUT_S = 10.0

# Each user's jobs cycle through these states, oldest first; the newest is running, and it is
# the one the user's client follows (as `wait` would).
STATES = ["succeeded", "failed", "succeeded", "cancelled", "succeeded", "queued", "running"]


@dataclass
class Seeded:
    keys: list[str]  # one API key per user
    followed: list[str]  # the running job each user's client follows
    jobs: int
    queued: list[str] = field(default_factory=list)  # their messages wait in the broker
    running: list[str] = field(default_factory=list)  # their leases are kept fresh


@dataclass
class Samples:
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: list[str] = field(default_factory=list)

    def error(self, kind: str, what: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {what}")


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """A fresh schema in the PostgreSQL database at `url`; yields a URL using it, then drops it."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def stage_log(conditions: list[str]) -> list[StageRecord]:
    """A finished job's stage log: data, then extraction, accuracy and metrics per condition."""
    stages = [StageRecord(name="data", outcome="done", seconds=0.4, detail="200 eval, 320 train")]
    for name in conditions:
        stages += [
            StageRecord(name=f"extract:{name}", outcome="done", seconds=41.5,
                        detail=f"200 prompts, 31 layers -> activations/{uuid.uuid4().hex}"),
            StageRecord(name=f"accuracy:{name}", outcome="cached", seconds=0.1,
                        detail=f"reused scores/{uuid.uuid4().hex}"),
            StageRecord(name=f"metrics:{name}", outcome="done", seconds=3.2,
                        detail="id_twonn, id_gride, id_mle x 31 layers"),
        ]  # fmt: skip
    return stages


def advance(s: Session, job_id: str, state: str, conditions: list[str], rng: random.Random) -> None:
    """Take a queued job to `state` the way the API and a worker would."""
    if state == "queued":
        return
    if state == "cancelled":
        crud.request_cancel(s, job_id)
        return
    worker = f"gpu{rng.randrange(8)}:{rng.randrange(1000, 99999)}"
    crud.start_job(s, job_id, worker=worker)
    stages = stage_log(conditions)
    for record in stages[:3] if state == "running" else stages:
        crud.append_stage(s, job_id, record)
    if state == "running":
        crud.update_progress(s, job_id, Progress(stage="extract:icl", fraction=0.35,
                                                 message="batch 12/25"))  # fmt: skip
    elif state == "failed":
        error = JobError(type="ModelLoadError", message="CUDA out of memory loading the model",
                         hint="free the GPU or use a smaller dtype")  # fmt: skip
        crud.fail_job(s, job_id, error)
    else:
        artifacts = {f"plots/{m}.png": f"jobs/{job_id}/plots/{m}.png"
                     for m in ("id_twonn", "id_gride", "id_mle")}  # fmt: skip
        artifacts |= {f"activations/{c}.safetensors": f"activations/{uuid.uuid4().hex}.st"
                      for c in conditions}  # fmt: skip
        crud.finish_job(s, job_id, results_key=f"jobs/{job_id}/results.json",
                        artifacts=artifacts)  # fmt: skip


def seed(database_url: str, n_users: int, jobs_per_user: int) -> Seeded:
    """Migrate the database, then write users with a key each and their jobs through `crud`."""
    engine = make_engine(database_url)
    init_db(engine)
    specs = [r.job_spec() for r in RECIPES.values()]
    rng = random.Random(0)
    keys, followed, queued, running, total = [], [], [], [], 0
    try:
        with session_factory(engine)() as s:
            for u in range(n_users):
                owner = f"user{u:03d}"
                keys.append(users.create_api_key(s, owner, label="api_load"))
                for j in range(jobs_per_user):
                    spec = specs[(u + j) % len(specs)]
                    state = STATES[(j - jobs_per_user) % len(STATES)]
                    job_id = crud.create_job(s, owner, spec).id
                    advance(s, job_id, state, [c.name for c in spec.conditions], rng)
                    {"queued": queued, "running": running}.get(state, []).append(job_id)
                    total += 1
                followed.append(job_id)
    finally:
        engine.dispose()
    return Seeded(keys=keys, followed=followed, jobs=total, queued=queued, running=running)


@contextmanager
def live_workers(database_url: str, running: list[str], every_s: float) -> Iterator[None]:
    """Renew the leases of the seeded running jobs, as their (absent) workers would.

    Without it the server's reconciler would find them stale mid-run and re-enqueue them: a
    recovery burst that a steady-state benchmark should not measure.
    """
    engine = make_engine(database_url)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            with engine.begin() as conn:
                conn.execute(update(JobRow).where(JobRow.id.in_(running))
                             .values(heartbeat_at=utcnow()))  # fmt: skip

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    env: dict[str, str], port: int, workers: int, log: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "uvicorn", "reprlab.server.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: parent pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server at {url} was not healthy within {timeout} s")


async def follow(
    http: httpx.AsyncClient, job_id: str, *, start: float, end: float, interval: float,
    list_every: int, samples: Samples,
) -> None:  # fmt: skip
    """One client: from `start` to `end` (event loop time), poll the job like `wait`, and list
    the jobs like `reprlab list` every `list_every` polls."""
    status = ("status", f"/v1/jobs/{job_id}", None)
    listing = ("list", "/v1/jobs", {"limit": LIST_LIMIT, "offset": 0})
    loop = asyncio.get_running_loop()
    tick, n = start, 0
    while tick < end:
        await asyncio.sleep(max(0.0, tick - loop.time()))
        for kind, path, params in (
            [status, listing] if n % list_every == list_every - 1 else [status]
        ):
            t0 = time.perf_counter()
            try:
                response = await http.get(path, params=params)
                elapsed = (time.perf_counter() - t0) * 1000
                if response.is_success:
                    samples.latencies_ms[kind].append(elapsed)
                else:
                    samples.error(kind, f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                samples.error(kind, f"{type(exc).__name__}: {exc}")
        n += 1
        tick += interval


async def drive(url: str, seeded: Seeded, args: argparse.Namespace) -> tuple[Samples, float]:
    """Run the clients; their first requests are spread evenly over the first interval.

    The schedule is fixed after every client exists: building 50 HTTP clients takes a while,
    and start delays counted from each one's creation would bunch them into one burst.
    """
    samples = Samples()
    users = [i % len(seeded.keys) for i in range(args.clients)]
    https = [
        httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, headers={
            "User-Agent": USER_AGENT, "Authorization": f"Bearer {seeded.keys[u]}"})
        for u in users
    ]  # fmt: skip
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.5
    offsets = [args.poll_interval * i / args.clients for i in range(args.clients)]
    random.Random(1).shuffle(offsets)
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*[
            follow(http, seeded.followed[u], start=begin + offset, end=begin + args.seconds,
                   interval=args.poll_interval, list_every=args.list_every, samples=samples)
            for http, u, offset in zip(https, users, offsets, strict=True)
        ])  # fmt: skip
    finally:
        for http in https:
            await http.aclose()
    return samples, time.perf_counter() - t0 - 0.5


def report(samples: Samples, wall_s: float) -> bool:
    """Print the latency table; True if the targets are met."""
    every = [x for values in samples.latencies_ms.values() for x in values]
    rows = [*sorted(samples.latencies_ms.items()), ("overall", every)]
    n_errors = sum(samples.errors.values())
    print(f"{'request':<10} {'n':>7} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8}")  # fmt: skip
    for kind, values in rows:
        errors = n_errors if kind == "overall" else samples.errors.get(kind, 0)
        if not values:
            print(f"{kind:<10} {0:>7} {errors:>7}")
            continue
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        print(f"{kind:<10} {len(values):>7} {errors:>7} {p50:8.1f} {p95:8.1f} {p99:8.1f} "
              f"{max(values):8.1f}")  # fmt: skip
    total = len(every) + n_errors
    print(f"{total} requests in {wall_s:.1f} s: {total / wall_s:.1f} requests/s")
    for example in samples.examples:
        print(f"  error: {example}")
    p99 = float(np.percentile(every, 99)) if every else float("inf")
    ok = n_errors == 0 and p99 < TARGET_P99_MS
    verdict = "PASS" if ok else "FAIL"
    print(f"{verdict}: {n_errors} errors (target 0), p99 {p99:.1f} ms (target < {TARGET_P99_MS:g})")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long they run")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--users", type=int, default=50, help="users seeded, one key each")
    parser.add_argument("--jobs-per-user", type=int, default=10, help="jobs seeded per user")
    parser.add_argument("--poll-interval", type=float, default=SDK_POLL_INTERVAL_S,
                        help="seconds between a client's polls (the SDK's wait)")  # fmt: skip
    parser.add_argument("--list-every", type=int, default=5, help="a list every N polls")
    parser.add_argument("--database-url", default=PG_URL, help="PostgreSQL database to use")
    parser.add_argument("--broker-url", default=BROKER_URL, help="the server's Redis database")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the server, e.g. REPRLAB_RATE_LIMIT_BURST=200 "
                        "(repeatable)")  # fmt: skip
    args = parser.parse_args()
    # A SIGTERM ends the run like Ctrl-C: the server is stopped and the schema dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    broker = redis.Redis.from_url(args.broker_url)
    broker.flushdb()
    with pg_schema(args.database_url) as database_url, tempfile.TemporaryDirectory() as home:
        t0 = time.perf_counter()
        seeded = seed(database_url, args.users, args.jobs_per_user)
        print(f"seeded {args.users} users and {seeded.jobs} jobs in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        env = {**os.environ, "REPRLAB_HOME": home, "REPRLAB_DATABASE_URL": database_url,
               "REPRLAB_BROKER_URL": args.broker_url}  # fmt: skip
        env.update(item.split("=", 1) for item in args.server_env)
        # A consistent steady state: queued jobs have their task message in the broker (no
        # worker consumes it) and running jobs a live lease, so the server's reconciler finds
        # nothing to recover, as on a healthy deployment.
        queue = CeleryQueue(args.broker_url)
        for job_id in seeded.queued:
            queue.enqueue(job_id)
        port = free_port()
        log = Path(home) / "server.log"
        server = start_server(env, port, args.workers, log)
        url = f"http://127.0.0.1:{port}"
        beats = live_workers(database_url, seeded.running, every_s=2.0)
        beats.__enter__()
        try:
            wait_healthy(url, server)
            print(f"{args.clients} clients for {args.seconds:g} s against {args.workers} uvicorn "
                  f"worker(s), polling every {args.poll_interval:g} s, listing every "
                  f"{args.list_every} polls")  # fmt: skip
            cpu0 = cpu_seconds(server.pid)
            samples, wall_s = asyncio.run(drive(url, seeded, args))
            server_cpu_s = cpu_seconds(server.pid) - cpu0
        finally:
            beats.__exit__(None, None, None)
            server.terminate()
            server.wait(timeout=30)
            broker.flushdb()
            server_log = log.read_text(errors="replace").strip()
        if server_log:
            print(f"server log:\n{server_log[-3000:]}")
    ok = report(samples, wall_s)
    n = sum(len(v) for v in samples.latencies_ms.values()) + sum(samples.errors.values())
    print(f"server CPU: {server_cpu_s:.1f} s ({1000 * server_cpu_s / max(n, 1):.2f} ms per "
          f"request, {100 * server_cpu_s / wall_s:.0f}% of one core); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
