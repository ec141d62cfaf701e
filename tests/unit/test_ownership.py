"""Ownership on every route of the app, on real SQLite and PostgreSQL (FastAPI TestClient).

`ROUTES` holds the expected behaviour of each route. The routes are read from the app itself,
so a route added without an entry here fails `test_every_route_has_an_expected_outcome`, and
each entry's kind decides which checks it gets:

- on a job (`JobRoute`): member bob gets 404 on alice's job, exactly as for an unknown id, and
  the job stays unchanged; alice and an admin get the route's answer;
- job listing and creation: bob never sees alice's jobs; a job belongs to its creator;
- admin routes: 403 for members, with nothing changed; the admin's request succeeds;
- every route but the public ones: 401 without a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from recording_queue import RecordingQueue
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from reprlab.schemas.results import ConditionResult, JobResults, LayerCurve, ModelInfo
from reprlab.schemas.users import Role
from reprlab.server import crud, users
from reprlab.server.app import create_app
from reprlab.server.config import Settings
from reprlab.server.models import ApiKeyRow, AuditRow, JobRow, TrustedModelRow, UserRow
from reprlab.server.storage import ArtifactStore

SPEC: dict[str, Any] = {
    "name": "ownership",
    "model": {"name": "smollm2-135m-instruct"},
    "dataset": {"name": "sentiment", "n_eval": 20, "n_train": 10},
    "conditions": [{"name": "icl-5", "k": 5}],
}
ARTIFACTS = {
    "results.json": b"",  # filled with the job's results
    "plots/id_twonn.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 32,
    "activations/icl-5.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    "adapters/lora.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      adapter",
}


@dataclass(frozen=True)
class Public:
    """No key needed."""


@dataclass(frozen=True)
class Me:
    """Answers about the caller only."""


@dataclass(frozen=True)
class CreateJob:
    """The new job belongs to the caller."""


@dataclass(frozen=True)
class ListJobs:
    """Members see their own jobs only; an admin sees all (or one owner's)."""


@dataclass(frozen=True)
class JobRoute:
    """A route on one job: `job` is which of alice's jobs; `ok` what its owner and an admin get.
    `names` fills a `{name}` path parameter (each is tried)."""

    job: str = "done"
    ok: int = 200
    names: tuple[str, ...] = ("",)


@dataclass(frozen=True)
class AdminRoute:
    """Admins only: a valid request (`path` concrete) and the admin's status."""

    path: str
    ok: int = 200
    json: dict[str, Any] | None = None


@dataclass(frozen=True)
class UploadRoute:
    """A dataset upload route: `path` concrete (the world's upload of alice's is `{upload}`)."""

    path: str


UPLOAD = b'{"input": "a", "output": "b"}\n'

# Key ids: 1 root (admin), 2 alice, 3 bob, 4 a spare key of alice's. Admin requests run in this
# order (key 4's expiry is changed before it is revoked).
ROUTES: dict[tuple[str, str], Any] = {
    ("GET", "/openapi.json"): Public(),
    ("GET", "/docs"): Public(),
    ("GET", "/docs/oauth2-redirect"): Public(),
    ("GET", "/redoc"): Public(),
    ("GET", "/v1/health"): Public(),
    ("GET", "/v1/me"): Me(),
    ("POST", "/v1/jobs"): CreateJob(),
    ("GET", "/v1/jobs"): ListJobs(),
    ("GET", "/v1/jobs/{job_id}"): JobRoute(),
    ("POST", "/v1/jobs/{job_id}/cancel"): JobRoute(job="queued"),
    ("GET", "/v1/jobs/{job_id}/results"): JobRoute(),
    ("GET", "/v1/jobs/{job_id}/artifacts"): JobRoute(),
    ("GET", "/v1/jobs/{job_id}/artifacts/{name:path}"): JobRoute(names=tuple(ARTIFACTS)),
    ("POST", "/v1/datasets"): UploadRoute("/v1/datasets?filename=d.jsonl"),
    ("GET", "/v1/datasets/{upload_id}"): UploadRoute("/v1/datasets/{upload}"),
    ("GET", "/v1/admin/users"): AdminRoute("/v1/admin/users"),
    ("POST", "/v1/admin/users"): AdminRoute("/v1/admin/users", 201, {"name": "carol"}),
    ("GET", "/v1/admin/users/{name}"): AdminRoute("/v1/admin/users/bob"),
    ("PATCH", "/v1/admin/users/{name}"): AdminRoute("/v1/admin/users/bob", json={"role": "admin"}),
    ("GET", "/v1/admin/keys"): AdminRoute("/v1/admin/keys"),
    ("POST", "/v1/admin/keys"): AdminRoute("/v1/admin/keys", 201, {"user": "bob"}),
    ("GET", "/v1/admin/keys/{key_id}"): AdminRoute("/v1/admin/keys/4"),
    ("PATCH", "/v1/admin/keys/{key_id}"): AdminRoute("/v1/admin/keys/4", json={"expires_at": None}),
    ("POST", "/v1/admin/keys/{key_id}/revoke"): AdminRoute("/v1/admin/keys/4/revoke"),
    ("GET", "/v1/admin/audit"): AdminRoute("/v1/admin/audit"),
    ("GET", "/v1/admin/trusted-models"): AdminRoute("/v1/admin/trusted-models"),
    ("POST", "/v1/admin/trusted-models"): AdminRoute("/v1/admin/trusted-models", 201,
                                                     {"model": "org/new"}),
    ("DELETE", "/v1/admin/trusted-models"): AdminRoute("/v1/admin/trusted-models?model=org/m",
                                                       204),
}  # fmt: skip


@dataclass
class World:
    """alice's jobs, three users' keys, a trusted model."""

    client: TestClient
    app: FastAPI
    keys: dict[str, dict[str, str]]
    jobs: dict[str, str] = field(default_factory=dict)
    upload: str = ""

    @property
    def sessions(self) -> sessionmaker[Session]:
        sessions: sessionmaker[Session] = self.app.state.sessions
        return sessions

    def request(self, method: str, path: str, who: str | None, **kw: Any) -> Any:
        headers = self.keys[who] if who else {}
        return self.client.request(method, path, headers=headers, **kw)


def _results(job_id: str) -> bytes:
    curve = LayerCurve(metric="id_twonn", label="TwoNN", layers=[0, 1], values=[1.0, 2.0])
    model = ModelInfo(name="tiny", resolved="/m", n_layers=1, hidden_size=8, dtype="float32",
                      device="cpu")  # fmt: skip
    cond = ConditionResult(name="icl-5", paradigm="icl", n_items=20, layers=[0, 1],
                           curves=[curve])  # fmt: skip
    results = JobResults(job_id=job_id, model=model, conditions=[cond], artifacts=list(ARTIFACTS))
    return results.model_dump_json().encode()


def _succeed(world: World, job_id: str) -> None:
    """What a worker leaves behind: artifacts in the store, the job succeeded."""
    store: ArtifactStore = world.app.state.store
    keys = {}
    for name, data in ARTIFACTS.items():
        keys[name] = f"jobs/{job_id}/{name}"
        store.put_bytes(keys[name], data or _results(job_id))
    with world.sessions() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        row.status, row.results_key, row.artifacts = "succeeded", keys["results.json"], keys
        s.commit()


@pytest.fixture()
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    settings = Settings(home=tmp_path / "home", database_url=database_url,
                        artifact_url=f"file://{tmp_path / 'artifacts'}")  # fmt: skip
    app = create_app(settings, queue=RecordingQueue())
    with app.state.sessions() as s:
        keys = {
            "root": users.create_api_key(s, "root", role=Role.ADMIN),
            "alice": users.create_api_key(s, "alice"),
            "bob": users.create_api_key(s, "bob"),
        }
        users.create_api_key(s, "alice", label="spare")
        users.trust_model(s, "org/m", actor="root")
    headers = {who: {"Authorization": f"Bearer {key}"} for who, key in keys.items()}
    with TestClient(app, raise_server_exceptions=False) as client:
        world = World(client, app, headers)
        for name in ("done", "queued", "queued-2"):
            response = world.request("POST", "/v1/jobs", "alice", json={**SPEC, "name": name})
            assert response.status_code == 201, response.text
            world.jobs[name] = response.json()["id"]
        _succeed(world, world.jobs["done"])
        uploaded = world.request("POST", "/v1/datasets?filename=d.jsonl", "alice", content=UPLOAD)
        assert uploaded.status_code == 201, uploaded.text
        world.upload = uploaded.json()["id"]
        yield world


def _app_routes(app: FastAPI) -> set[tuple[str, str]]:
    found = set()
    for route in iter_route_contexts(app.routes):
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


def _snapshot(world: World) -> dict[str, Any]:
    """Everything a request could change: jobs, users, keys, trusted models, the audit log
    (but a key's `last_used_at`, which records the request itself)."""

    def rows(s: Session, model: Any) -> list[dict[str, Any]]:
        columns = [c.name for c in model.__table__.columns if c.name != "last_used_at"]
        return sorted(
            ({c: getattr(r, c) for c in columns} for r in s.scalars(select(model)).all()), key=repr
        )

    with world.sessions() as s:
        return {m.__tablename__: rows(s, m)
                for m in (JobRow, UserRow, ApiKeyRow, TrustedModelRow, AuditRow)}  # fmt: skip


def _error(response: Any, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"] == type_, body
    error: dict[str, Any] = body["error"]
    return error


def _concrete(path: str, job_id: str, name: str = "") -> str:
    return path.replace("{job_id}", job_id).replace("{name:path}", name)


# --- the table is complete ---------------------------------------------------------------------


def test_every_route_has_an_expected_outcome(world: World) -> None:
    routes = _app_routes(world.app)
    missing = sorted(routes - set(ROUTES))
    stale = sorted(set(ROUTES) - routes)
    assert not missing, f"routes without an expected outcome in ROUTES: {missing}"
    assert not stale, f"ROUTES lists routes the app does not have: {stale}"


def test_every_private_route_needs_a_key(world: World) -> None:
    before = _snapshot(world)
    for (method, path), case in ROUTES.items():
        if isinstance(case, AdminRoute):
            concrete = case.path
        elif isinstance(case, UploadRoute):
            concrete = case.path.replace("{upload}", world.upload)
        else:
            concrete = _concrete(path, world.jobs["done"], "results.json")
        response = world.request(method, concrete, None, json=getattr(case, "json", None))
        if isinstance(case, Public):
            assert response.status_code == 200, (method, path, response.text)
        else:
            _error(response, 401, "Unauthorized")
    assert _snapshot(world) == before


# --- jobs: another member's job is invisible ---------------------------------------------------


def test_member_gets_404_on_another_members_job(world: World) -> None:
    """bob: 404 as for an unknown id, nothing changed; alice (owner) and root: the answer."""
    cases = [(key, case) for key, case in ROUTES.items() if isinstance(case, JobRoute)]
    assert len(cases) >= 5
    before = _snapshot(world)
    for (method, path), case in cases:
        job_id = world.jobs[case.job]
        unknown = "f" * len(job_id)
        for name in case.names:
            where = f"bob: {method} {path} {name}"
            theirs = _error(world.request(method, _concrete(path, job_id, name), "bob"), 404,
                            "NotFound")  # fmt: skip
            none = _error(world.request(method, _concrete(path, unknown, name), "bob"), 404,
                          "NotFound")  # fmt: skip
            # Indistinguishable from a job that does not exist.
            assert theirs["message"].replace(job_id, unknown) == none["message"], where
            assert theirs["hint"] == none["hint"], where
    assert _snapshot(world) == before, "a request of bob's changed something"
    for who in ("alice", "root"):
        for (method, path), case in cases:
            job_id = world.jobs[case.job]
            if case.job == "queued" and who == "root":
                job_id = world.jobs["queued-2"]  # alice cancelled the first one
            for name in case.names:
                response = world.request(method, _concrete(path, job_id, name), who)
                assert response.status_code == case.ok, (who, method, path, response.text)
                if name:
                    assert response.content == (ARTIFACTS[name] or _results(job_id))


def test_member_cannot_cancel_another_members_job(world: World) -> None:
    job_id = world.jobs["queued"]
    _error(world.request("POST", f"/v1/jobs/{job_id}/cancel", "bob"), 404, "NotFound")
    with world.sessions() as s:
        row = s.get(JobRow, job_id)
        assert row is not None and row.status == "queued" and not row.cancel_requested
    cancelled = world.request("POST", f"/v1/jobs/{job_id}/cancel", "root")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    with world.sessions() as s:
        entry = s.scalars(select(AuditRow).where(AuditRow.action == "job.cancel")).one()
        assert (entry.actor, entry.target) == ("root", job_id)


def test_member_lists_only_their_own_jobs(world: World) -> None:
    key = ("GET", "/v1/jobs")
    assert isinstance(ROUTES[key], ListJobs)
    mine = world.request("POST", "/v1/jobs", "bob", json=SPEC).json()["id"]
    alices = set(world.jobs.values())
    for query in ("", "?status=queued", "?status=succeeded", "?limit=500", "?owner=bob"):
        page = world.request("GET", f"/v1/jobs{query}", "bob").json()
        assert {j["id"] for j in page["jobs"]} <= {mine}
        assert page["total"] == len(page["jobs"])
    _error(world.request("GET", "/v1/jobs?owner=alice", "bob"), 403, "Forbidden")
    alice = world.request("GET", "/v1/jobs", "alice").json()
    assert {j["id"] for j in alice["jobs"]} == alices and alice["total"] == 3
    admin = world.request("GET", "/v1/jobs", "root").json()
    assert {j["id"] for j in admin["jobs"]} == alices | {mine} and admin["total"] == 4
    only = world.request("GET", "/v1/jobs?owner=alice", "root").json()
    assert {j["id"] for j in only["jobs"]} == alices


def test_a_job_belongs_to_its_creator(world: World) -> None:
    assert isinstance(ROUTES[("POST", "/v1/jobs")], CreateJob)
    job = world.request("POST", "/v1/jobs", "bob", json=SPEC).json()
    assert job["owner"] == "bob"
    _error(world.request("GET", f"/v1/jobs/{job['id']}", "alice"), 404, "NotFound")
    spoof = world.request("POST", "/v1/jobs", "bob", json={**SPEC, "owner": "alice"})
    assert "owner" in _error(spoof, 422, "ValidationError")["message"]
    with world.sessions() as s:
        assert crud.list_jobs(s, "alice").total == 3


def test_me_answers_about_the_caller(world: World) -> None:
    assert isinstance(ROUTES[("GET", "/v1/me")], Me)
    for who in ("root", "alice", "bob"):
        assert world.request("GET", "/v1/me", who).json()["name"] == who


# --- admin routes ------------------------------------------------------------------------------


def test_an_upload_is_visible_to_its_owner_and_admins_only(world: World) -> None:
    path = f"/v1/datasets/{world.upload}"
    theirs = _error(world.request("GET", path, "bob"), 404, "NotFound")
    none = _error(world.request("GET", "/v1/datasets/" + "f" * 32, "bob"), 404, "NotFound")
    assert theirs["message"].replace(world.upload, "f" * 32) == none["message"]
    for who in ("alice", "root"):
        got = world.request("GET", path, who)
        assert got.status_code == 200 and got.json()["owner"] == "alice", (who, got.text)
    mine = world.request("POST", "/v1/datasets?filename=d.jsonl", "bob", content=UPLOAD)
    assert mine.status_code == 201 and mine.json()["owner"] == "bob"
    assert mine.json()["id"] != world.upload  # the same bytes, another owner: another upload
    spec = {**SPEC, "dataset": {"source": "file", "upload": world.upload}}
    refused = _error(world.request("POST", "/v1/jobs", "bob", json=spec), 422, "ValidationError")
    assert "no uploaded dataset" in refused["message"]


def test_admin_routes_refuse_members(world: World) -> None:
    """Members: 403 on every admin route, nothing changed. root: each request succeeds."""
    cases = [(key, case) for key, case in ROUTES.items() if isinstance(case, AdminRoute)]
    assert len(cases) >= 13
    before = _snapshot(world)
    for (method, path), case in cases:
        assert path.startswith("/v1/admin/")
        for member in ("alice", "bob"):
            response = world.request(method, case.path, member, json=case.json)
            error = _error(response, 403, "Forbidden")
            assert "admin API key" in error["message"], (method, path)
    assert _snapshot(world) == before
    for (method, path), case in cases:
        response = world.request(method, case.path, "root", json=case.json)
        assert response.status_code == case.ok, (method, path, response.text)
