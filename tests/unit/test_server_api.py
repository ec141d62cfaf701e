"""The REST API through FastAPI's TestClient, on real SQLite and real PostgreSQL databases.

The queue is a real in-process queue that records job ids; one test sends a real Celery message
to a real Redis, and one points the real CeleryQueue at a closed port (Redis down).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from recording_queue import RecordingQueue
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from reprlab.schemas.jobs import JobStatus
from reprlab.schemas.results import ConditionResult, JobResults, LayerCurve, ModelInfo
from reprlab.server import crud, users
from reprlab.server.app import create_app
from reprlab.server.config import Settings
from reprlab.server.queue import QUEUE, RUN_JOB_TASK, CeleryQueue, QueueUnavailable
from reprlab.server.storage import ArtifactStore

REDIS_URL = "redis://127.0.0.1:6379/12"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

SPEC: dict[str, Any] = {
    "name": "api test",
    "model": {"name": "smollm2-135m-instruct", "device": "cpu"},
    "dataset": {"name": "sentiment", "n_eval": 40, "n_train": 20, "seed": 1},
    "conditions": [{"name": "zero-shot", "k": 0}, {"name": "icl-5", "k": 5}],
    "metrics": [{"name": "id_twonn"}],
}


@dataclass
class Api:
    client: TestClient
    app: FastAPI
    queue: RecordingQueue
    alice: dict[str, str]
    bob: dict[str, str]

    @property
    def sessions(self) -> sessionmaker[Session]:
        sessions: sessionmaker[Session] = self.app.state.sessions
        return sessions

    @property
    def store(self) -> ArtifactStore:
        store: ArtifactStore = self.app.state.store
        return store

    def create(self, **overrides: Any) -> dict[str, Any]:
        response = self.client.post("/v1/jobs", json={**SPEC, **overrides}, headers=self.alice)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


def _settings(tmp_path: Path, database_url: str, broker_url: str = REDIS_URL) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        broker_url=broker_url,
        artifact_url=f"file://{tmp_path / 'artifacts'}",
    )


@pytest.fixture()
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    queue = RecordingQueue()
    app = create_app(_settings(tmp_path, database_url), queue=queue)
    with app.state.sessions() as s:
        alice = {"Authorization": f"Bearer {users.create_api_key(s, 'alice')}"}
        bob = {"X-API-Key": users.create_api_key(s, "bob")}
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, app, queue, alice, bob)


def _error(response: Any, status: int, type_: str) -> dict[str, Any]:
    """Check the one error shape and return its fields."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "hint"}
    assert body["error"]["type"] == type_
    assert "Traceback" not in response.text
    error: dict[str, Any] = body["error"]
    return error


# --- health, auth, error shapes -------------------------------------------------------------


def test_health_needs_no_auth(api: Api) -> None:
    body = api.client.get("/v1/health").json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["version"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer rl_wrong"}, {"X-API-Key": "rl_wrong"}, {"Authorization": "x"}],
)
def test_missing_or_invalid_key_is_401_saying_how_to_get_one(
    api: Api, headers: dict[str, str]
) -> None:
    for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/x")]:
        error = _error(api.client.request(method, path, headers=headers), 401, "Unauthorized")
        assert "create-key" in error["message"] and "Bearer" in error["message"]


def test_unknown_route_and_wrong_method_use_the_error_shape(api: Api) -> None:
    assert "/v1" in (_error(api.client.get("/nope"), 404, "NotFound")["hint"] or "")
    _error(api.client.delete("/v1/jobs", headers=api.alice), 405, "MethodNotAllowed")


def test_unexpected_error_is_500_without_traceback(api: Api) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals")

    api.app.add_api_route("/v1/boom", boom)
    error = _error(api.client.get("/v1/boom"), 500, "InternalError")
    assert "secret internals" not in error["message"]


def test_openapi_documents_the_spec(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}/results", "/v1/health"} <= set(schema["paths"])
    job_spec = schema["components"]["schemas"]["JobSpec"]
    assert all(p.get("description") for p in job_spec["properties"].values())


# --- jobs ------------------------------------------------------------------------------------


def test_create_get_list_jobs(api: Api) -> None:
    job = api.create()
    assert job["status"] == "queued" and job["owner"] == "alice" and job["name"] == "api test"
    assert api.queue.ids == [job["id"]]
    assert job["spec"]["conditions"][1] == {
        "paradigm": "icl", "name": "icl-5", "k": 5, "selection": "random",
        "group_by": "subject", "pick": "seeded", "seed": 0, "demos": None, "demos_file": None,
        "label_noise": 0.0, "demo_dataset": None,
    }  # fmt: skip
    got = api.client.get(f"/v1/jobs/{job['id']}", headers=api.alice)
    assert got.status_code == 200 and got.json() == job
    second = api.create(name="second")
    listed = api.client.get("/v1/jobs", headers=api.alice).json()
    assert [j["id"] for j in listed["jobs"]] == [second["id"], job["id"]] and listed["total"] == 2
    page = api.client.get("/v1/jobs?limit=1&offset=1", headers=api.alice).json()
    assert [j["id"] for j in page["jobs"]] == [job["id"]] and page["total"] == 2
    api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.alice)
    queued = api.client.get("/v1/jobs?status=queued", headers=api.alice).json()
    assert [j["id"] for j in queued["jobs"]] == [second["id"]]
    assert api.client.get("/v1/jobs", headers=api.bob).json() == {"jobs": [], "total": 0}
    bad = _error(api.client.get("/v1/jobs?status=nope&limit=0", headers=api.alice), 422,
                 "ValidationError")  # fmt: skip
    assert "query.status" in bad["message"] and "query.limit" in bad["message"]


def test_another_users_job_is_404(api: Api) -> None:
    job_id = api.create()["id"]
    for method, suffix in [("GET", ""), ("POST", "/cancel"), ("GET", "/results"),
                           ("GET", "/artifacts"), ("GET", "/artifacts/results.json")]:  # fmt: skip
        response = api.client.request(method, f"/v1/jobs/{job_id}{suffix}", headers=api.bob)
        _error(response, 404, "NotFound")
    _error(api.client.get("/v1/jobs/unknown", headers=api.alice), 404, "NotFound")
    with api.sessions() as s:  # bob's attempt changed nothing
        assert crud.get_job(s, job_id).status == JobStatus.QUEUED  # type: ignore[union-attr]


def test_cancel_queued_then_finished_is_409(api: Api) -> None:
    job_id = api.create()["id"]
    cancelled = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.alice)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    with api.sessions() as s:
        assert crud.start_job(s, job_id) is None  # the worker will not run it
    error = _error(api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.alice), 409,
                   "Conflict")  # fmt: skip
    assert "cancelled" in error["message"]


def test_cancel_running_job_asks_the_worker_to_stop(api: Api) -> None:
    job_id = api.create()["id"]
    with api.sessions() as s:
        crud.start_job(s, job_id)
    response = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.alice)
    assert response.status_code == 200 and response.json()["status"] == "running"
    with api.sessions() as s:
        assert crud.is_cancel_requested(s, job_id)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"conditions": [{"name": "bad", "k": -1}]}, "conditions.0.k"),
        ({"conditions": []}, "conditions"),
        ({"dataset": {"name": "sentiment", "bogus": 1}}, "dataset.bogus: unknown field"),
        ({"metrics": [{"name": "id_nope"}]}, "metrics.0: Input tag 'id_nope'"),
        ({"metrics": [{"name": "id_gride", "report_n2": 12}]}, "metrics.0: report_n2=12"),
        ({"dataset": {"source": "inline", "items": []}}, "dataset.items: List should"),
        ({"dataset": {"source": "inline"}}, "dataset.items: required field is missing"),
        ({"model": None}, "model: Input should be a valid dictionary"),
    ],
)
def test_invalid_spec_is_422_naming_the_field(api: Api, patch: dict[str, Any], needle: str) -> None:
    response = api.client.post("/v1/jobs", json={**SPEC, **patch}, headers=api.alice)
    error = _error(response, 422, "ValidationError")
    assert needle in error["message"] and "body." not in error["message"]
    assert "openapi.json" in error["hint"] and "fix the fields" in error["hint"]
    assert api.queue.ids == []


def test_unknown_field_message_says_unknown(api: Api) -> None:
    response = api.client.post("/v1/jobs", json={**SPEC, "bogus_top": 1}, headers=api.alice)
    assert "bogus_top: unknown field" in _error(response, 422, "ValidationError")["message"]


def test_malformed_json_is_422_with_clear_message(api: Api) -> None:
    headers = {**api.alice, "Content-Type": "application/json"}
    response = api.client.post("/v1/jobs", content=b'{"model": ', headers=headers)
    assert "malformed JSON" in _error(response, 422, "ValidationError")["message"]


def test_nul_characters_are_422_not_a_database_error(api: Api) -> None:
    # PostgreSQL text columns cannot hold NUL; the API must refuse them, not answer 500.
    response = api.client.post("/v1/jobs", json={**SPEC, "name": "a\x00b"}, headers=api.alice)
    assert "name: text must not contain NUL" in _error(response, 422, "ValidationError")["message"]
    error = _error(api.client.get("/v1/jobs/x%00y", headers=api.alice), 422, "ValidationError")
    assert "path.job_id" in error["message"]
    assert api.queue.ids == []


# --- results and artifacts -------------------------------------------------------------------


def _results(job_id: str) -> JobResults:
    curve = LayerCurve(metric="id_twonn", label="TwoNN ID (discard 10%)", layers=[0, 1, 2],
                       values=[3.0, 7.5, None], summary={"auc": 0.5})  # fmt: skip
    return JobResults(
        job_id=job_id,
        model=ModelInfo(
            name="tiny",
            resolved="/m/tiny",
            n_layers=2,
            hidden_size=64,
            dtype="float32",
            device="cpu",
        ),  # fmt: skip
        conditions=[
            ConditionResult(
                name="icl-5", paradigm="icl", n_items=40, layers=[0, 1, 2], curves=[curve]
            )
        ],  # fmt: skip
        artifacts=["results.json", "plots/id_twonn.png", "activations/icl-5.safetensors"],
    )


def _finish(api: Api, job_id: str) -> dict[str, bytes]:
    """Do what a worker does: run the job, store its artifacts, mark it succeeded."""
    files = {
        "results.json": _results(job_id).model_dump_json().encode(),
        "plots/id_twonn.png": PNG,
        "activations/icl-5.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " * 1000,
    }
    keys = {name: f"jobs/{job_id}/{name}" for name in files}
    keys["activations/icl-5.safetensors"] = "activations/0123abcd.safetensors"
    for name, data in files.items():
        api.store.put_bytes(keys[name], data)
    with api.sessions() as s:
        assert crud.start_job(s, job_id) is not None
        crud.finish_job(s, job_id, results_key=keys["results.json"], artifacts=keys)
    return files


def test_results_409_until_success_then_typed(api: Api) -> None:
    job_id = api.create()["id"]
    url = f"/v1/jobs/{job_id}/results"
    assert "queued" in _error(api.client.get(url, headers=api.alice), 409, "Conflict")["message"]
    _finish(api, job_id)
    response = api.client.get(url, headers=api.alice)
    assert response.status_code == 200
    assert JobResults.model_validate(response.json()) == _results(job_id)
    job = api.client.get(f"/v1/jobs/{job_id}", headers=api.alice).json()
    assert job["status"] == "succeeded" and job["progress"]["fraction"] == 1.0


def test_results_of_failed_job_say_the_error(api: Api) -> None:
    from reprlab.schemas.jobs import JobError

    job_id = api.create()["id"]
    with api.sessions() as s:
        crud.start_job(s, job_id)
        crud.fail_job(s, job_id, JobError(type="ModelLoadError", message="no model 'zz'"))
    error = _error(api.client.get(f"/v1/jobs/{job_id}/results", headers=api.alice), 409,
                   "Conflict")  # fmt: skip
    assert "failed" in error["message"] and "ModelLoadError: no model 'zz'" in error["message"]


def test_artifacts_list_download_and_404(api: Api) -> None:
    job_id = api.create()["id"]
    base = f"/v1/jobs/{job_id}/artifacts"
    assert api.client.get(base, headers=api.alice).json() == {"artifacts": []}
    files = _finish(api, job_id)
    listed = api.client.get(base, headers=api.alice).json()["artifacts"]
    assert {a["name"]: (a["size"], a["media_type"]) for a in listed} == {
        "activations/icl-5.safetensors": (len(files["activations/icl-5.safetensors"]),
                                          "application/octet-stream"),
        "plots/id_twonn.png": (len(PNG), "image/png"),
        "results.json": (len(files["results.json"]), "application/json"),
    }  # fmt: skip
    media_types = {a["name"]: a["media_type"] for a in listed}
    for name, data in files.items():
        response = api.client.get(f"{base}/{name}", headers=api.alice)
        assert response.status_code == 200 and response.content == data
        assert response.headers["content-type"].startswith(media_types[name])
    error = _error(api.client.get(f"{base}/plots/nope.png", headers=api.alice), 404, "NotFound")
    assert "plots/nope.png" in error["message"] and "plots/id_twonn.png" in error["hint"]


@pytest.mark.parametrize(
    "name", ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "plots%2F..%2F..%2Freprlab.db",
             "..%5C..%5Cx"],
)  # fmt: skip
def test_artifact_path_traversal_is_refused(api: Api, name: str) -> None:
    job_id = api.create()["id"]
    _finish(api, job_id)
    response = api.client.get(f"/v1/jobs/{job_id}/artifacts/{name}", headers=api.alice)
    assert response.status_code == 404 and "root:" not in response.text
    _error(response, 404, "NotFound")


# --- the real queue --------------------------------------------------------------------------


def _redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc}")
    return client


def test_celery_queue_puts_a_run_job_message_on_redis() -> None:
    r = _redis()
    job_id = f"job-{uuid.uuid4().hex}"  # unique, so a concurrent test run cannot interfere
    raw: list[bytes] = []
    try:
        CeleryQueue(REDIS_URL).enqueue(job_id)
        raw = [m for m in r.lrange(QUEUE, 0, -1) if job_id.encode() in base64.b64decode(
            json.loads(m)["body"])]  # fmt: skip
        assert len(raw) == 1
        message = json.loads(raw[0])
        assert message["headers"]["task"] == RUN_JOB_TASK == "reprlab.run_job"
        assert message["content-type"] == "application/json"
        assert message["properties"]["delivery_info"]["routing_key"] == QUEUE
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert (args, kwargs) == ([job_id], {})
    finally:
        for message in raw:
            r.lrem(QUEUE, 0, message)


def _start_private_redis(port: int) -> subprocess.Popen[bytes]:
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server on port {port} did not start")


def test_celery_queue_survives_a_redis_restart_and_fails_fast_when_down() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    queue = CeleryQueue(f"redis://127.0.0.1:{port}/0", connect_timeout=1)
    proc = _start_private_redis(port)
    try:
        queue.enqueue("before")
        proc.terminate()
        proc.wait()
        proc = _start_private_redis(port)  # the pooled connection is now broken
        queue.enqueue("after")
        assert redis.Redis(port=port).llen(QUEUE) == 1
    finally:
        proc.terminate()
        proc.wait()
    started = time.monotonic()
    with pytest.raises(QueueUnavailable, match=str(port)):
        queue.enqueue("down")
    assert time.monotonic() - started < 3


def test_enqueue_with_broker_down_fails_the_job_and_answers_503(
    tmp_path: Path, database_url: str
) -> None:
    queue = CeleryQueue("redis://127.0.0.1:1/0", connect_timeout=1)  # nothing listens on port 1
    with pytest.raises(QueueUnavailable, match="127.0.0.1:1"):
        queue.enqueue("x")
    app = create_app(_settings(tmp_path, database_url, "redis://127.0.0.1:1/0"), queue=queue)
    with app.state.sessions() as s:
        headers = {"Authorization": f"Bearer {users.create_api_key(s, 'alice')}"}
    with TestClient(app) as client:
        error = _error(client.post("/v1/jobs", json=SPEC, headers=headers), 503,
                       "ServiceUnavailable")  # fmt: skip
        assert "Redis" in (error["hint"] or "")
        jobs = client.get("/v1/jobs", headers=headers).json()["jobs"]
    assert len(jobs) == 1 and jobs[0]["status"] == "failed"
    assert jobs[0]["error"]["type"] == "QueueUnavailable"


def test_unreachable_database_is_503_with_retry_after(tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    app = create_app(settings, queue=RecordingQueue())
    # A real PostgreSQL engine on a port nobody listens on: every query fails to connect.
    down = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test")  # nothing on port 1
    app.state.sessions = sessionmaker(down)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/jobs", headers={"Authorization": "Bearer rl_x"})
    error = _error(response, 503, "ServiceUnavailable")
    assert "database" in error["message"] and response.headers["Retry-After"]
    down.dispose()


def test_server_import_does_not_load_torch_or_the_worker() -> None:
    code = (
        "import sys, reprlab.server.app, reprlab.server.crud; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'dadapy', 'reprlab.worker') "
        "if m in sys.modules); print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
