"""The API rate limiter (token buckets per key / client IP) and the SDK honouring Retry-After.

The buckets are driven by a fake clock; the middleware runs in the real app (TestClient); the
SDK talks to the real app under a real uvicorn server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from live_server import serve
from recording_queue import RecordingQueue
from sqlalchemy import select
from starlette.types import Receive, Scope, Send

from reprlab.client import Client, RateLimitError
from reprlab.client._base import retry_after
from reprlab.server import users
from reprlab.server.app import create_app
from reprlab.server.config import Settings
from reprlab.server.models import ApiKeyRow
from reprlab.server.ratelimit import TokenBuckets

SPEC: dict[str, Any] = {
    "model": {"name": "smollm2-135m-instruct", "device": "cpu"},
    "dataset": {"name": "sentiment", "n_eval": 40, "n_train": 20},
    "conditions": [{"name": "zero-shot", "k": 0}],
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the buckets -------------------------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(4)] == [0, 0, 0, 1]  # 3 at once, then wait 1 s
    clock.now += 0.25  # half a token back: still 1 s to wait (rounded up, never 0)
    assert buckets.take("a") == 1
    clock.now += 0.25
    assert buckets.take("a") == 0 and buckets.take("a") == 1
    clock.now += 3600  # refills only up to the burst
    assert [buckets.take("a") for _ in range(4)] == [0, 0, 0, 1]


@pytest.mark.parametrize(("rate", "expected"), [(0.25, 4), (0.1, 10), (3.0, 1), (100.0, 1)])
def test_retry_after_is_whole_seconds_until_the_next_token(rate: float, expected: int) -> None:
    buckets = TokenBuckets(rate=rate, burst=1, clock=FakeClock())
    assert buckets.take("a") == 0
    assert buckets.take("a") == expected


def test_buckets_are_separate_and_a_multi_take_is_all_or_nothing() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock)
    assert buckets.take("key:a", "ip:x") == 0
    assert buckets.take("key:b") == 0  # another key has its own bucket
    assert buckets.take("key:c", "ip:x") == 1  # the IP is empty: c's token is not taken
    assert buckets.get("key:c").tokens == 1


def test_least_recently_used_buckets_are_forgotten_beyond_the_cap() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, clock=FakeClock(), max_buckets=2)
    for name in ("a", "b", "c"):
        buckets.take(name)
    assert buckets.take("b") == 1 and buckets.take("c") == 1
    assert buckets.take("a") == 0  # forgotten, so full again


# --- the middleware in the app -----------------------------------------------------------------


def make_app(tmp_path: Path, **overrides: Any) -> tuple[FastAPI, RecordingQueue, str, str]:
    settings = Settings(
        home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        broker_url="redis://127.0.0.1:1/0", artifact_url=f"file://{tmp_path / 'artifacts'}",
        **overrides,
    )  # fmt: skip
    queue = RecordingQueue()
    app = create_app(settings, queue=queue)
    with app.state.sessions() as s:
        alice, bob = users.create_api_key(s, "alice"), users.create_api_key(s, "bob")
    return app, queue, alice, bob


@pytest.fixture()
def limited(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    # 3 at once, then one request per 100 s: no refill during the test.
    app, _, alice, bob = make_app(tmp_path, rate_limit_per_s=0.01, rate_limit_burst=3)
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {alice}"}, {"X-API-Key": bob}


def test_burst_then_429_with_retry_after_and_the_error_body(limited: Any) -> None:
    client, alice, _ = limited
    assert [client.get("/v1/jobs", headers=alice).status_code for _ in range(3)] == [200] * 3
    response = client.get("/v1/jobs", headers=alice)
    assert response.status_code == 429
    assert 90 <= int(response.headers["Retry-After"]) <= 100
    error = response.json()["error"]
    assert set(error) == {"type", "message", "hint"} and error["type"] == "RateLimited"
    assert "at most 0.01 requests per second per API key" in error["message"]
    assert "bursts of up to 3" in error["message"]
    assert "rate_limit_per_s" in error["message"] and "Retry-After" in error["hint"]
    # Any method, any route behind the limiter.
    assert client.post("/v1/jobs", json=SPEC, headers=alice).status_code == 429


def test_each_key_has_its_own_bucket_and_health_is_exempt(limited: Any) -> None:
    client, alice, bob = limited
    for _ in range(3):
        client.get("/v1/jobs", headers=alice)
    assert client.get("/v1/jobs", headers=alice).status_code == 429
    assert client.get("/v1/jobs", headers=bob).status_code == 200
    assert [client.get("/v1/health").status_code for _ in range(10)] == [200] * 10


def test_without_an_accepted_key_the_client_address_is_limited(limited: Any) -> None:
    client, alice, _ = limited
    assert client.get("/v1/jobs", headers=alice).status_code == 200  # alice's key is now known
    # Random keys do not each get a fresh bucket: they share the address's (2 tokens left).
    statuses = [
        client.get("/v1/jobs", headers={"Authorization": f"Bearer rl_guess{i}"}).status_code
        for i in range(4)
    ]
    assert statuses == [401, 401, 429, 429]
    assert client.get("/v1/jobs").status_code == 429  # nor do requests without a key
    assert client.get("/v1/jobs", headers=alice).status_code == 200  # a known key is unaffected


def test_only_a_key_that_authenticated_gets_its_own_bucket(tmp_path: Path) -> None:
    app, _, alice, _ = make_app(tmp_path, rate_limit_per_s=0.01, rate_limit_burst=3)
    guess = {"Authorization": "Bearer rl_guess"}
    with TestClient(app) as client:
        # A route without authentication answers any key: that does not make the key known.
        assert client.get("/openapi.json", headers=guess).status_code == 200
        assert client.get("/v1/nowhere", headers=guess).status_code == 404
        assert client.get("/v1/jobs").status_code == 401  # the address's last token
        assert client.get("/v1/jobs", headers=guess).status_code == 429  # no bucket of its own
    # A revoked key is known no more: it shares its address's bucket again.
    app, _, alice, _ = make_app(tmp_path / "2", rate_limit_per_s=0.01, rate_limit_burst=3)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {alice}"}
        assert client.get("/v1/jobs", headers=headers).status_code == 200  # known; ip: 2 left
        with app.state.sessions() as s:
            key_id = s.scalar(select(ApiKeyRow.id).where(ApiKeyRow.owner == "alice"))
            assert key_id is not None
            users.revoke_key(s, key_id, actor="test")
        assert client.get("/v1/jobs").status_code == 401  # ip: 1 left
        assert client.get("/v1/jobs", headers=headers).status_code == 401  # alice's bucket: 1 left
        assert client.get("/v1/jobs").status_code == 401  # ip: 0 left
        assert client.get("/v1/jobs", headers=headers).status_code == 429  # ip bucket again


def test_rate_0_turns_the_limiter_off(tmp_path: Path) -> None:
    app, _, alice, _ = make_app(tmp_path, rate_limit_per_s=0, rate_limit_burst=1)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {alice}"}
        assert {client.get("/v1/jobs", headers=headers).status_code for _ in range(100)} == {200}


# --- the SDK against a real server -------------------------------------------------------------


class CountingApp:
    """The app, counting the requests that reach the server by (method, path)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@pytest.fixture()
def live(tmp_path: Path) -> Iterator[tuple[str, CountingApp, RecordingQueue, str]]:
    # One request at once, one more per second.
    app, queue, alice, _ = make_app(tmp_path, rate_limit_per_s=1.0, rate_limit_burst=1,
                                    max_queued_jobs=1)  # fmt: skip
    counting = CountingApp(app)
    with serve(counting) as url:
        yield url, counting, queue, alice


def test_sdk_waits_out_a_429_and_succeeds(live: Any) -> None:
    url, counting, _, key = live
    with Client(url, key, max_retries=3) as client:
        client.jobs.list()
        start = time.monotonic()
        assert client.jobs.list().total == 0
        assert time.monotonic() - start >= 0.9  # Retry-After: 1
    assert counting.calls == [("GET", "/v1/jobs")] * 3  # the refused one was sent again


def test_sdk_resends_a_rate_limited_job_creation_once(live: Any) -> None:
    url, counting, queue, key = live
    with Client(url, key, max_retries=3) as client:
        client.jobs.list()  # empties the bucket
        job = client.jobs.create(SPEC)  # refused with Retry-After, sent again, stored once
    assert queue.ids == [job.id]
    assert counting.calls.count(("POST", "/v1/jobs")) == 2


def test_sdk_does_not_wait_longer_than_its_cap(live: Any) -> None:
    url, counting, _, key = live
    with Client(url, key, max_retries=3) as client:
        client._transport.max_retry_wait = 0.5
        client.jobs.list()
        start = time.monotonic()
        with pytest.raises(RateLimitError) as err:
            client.jobs.list()
        assert time.monotonic() - start < 0.5
    assert err.value.type == "RateLimited"
    assert len(counting.calls) == 2


def test_sdk_does_not_resend_a_quota_refusal(live: Any) -> None:
    url, counting, queue, key = live
    with Client(url, key, max_retries=3) as client:
        client.jobs.create(SPEC)
        time.sleep(1.05)  # a token is back: the next refusal is the quota's
        with pytest.raises(RateLimitError) as err:
            client.jobs.create(SPEC)
    assert err.value.type == "QuotaExceeded" and "max_queued_jobs" in err.value.message
    assert counting.calls.count(("POST", "/v1/jobs")) == 2 and len(queue.ids) == 1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    def response(value: str | None) -> httpx.Response:
        return httpx.Response(429, headers={} if value is None else {"Retry-After": value})

    assert retry_after(response("7")) == 7.0
    assert retry_after(response(None)) is None and retry_after(response("soon")) is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after(response(later)) or 0) <= 30
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after(response(earlier)) == 0.0
