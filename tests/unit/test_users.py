"""Users, roles, API keys, the audit log and trusted models, on real SQLite and PostgreSQL:
the users module, the admin REST API (TestClient), the SDK against a real uvicorn on
127.0.0.1, and the `reprlab admin` CLI."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from recording_queue import RecordingQueue
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from reprlab.schemas.specs import JobSpec
from reprlab.schemas.users import Role, UserUpdate
from reprlab.server import crud, users
from reprlab.server.app import create_app
from reprlab.server.config import Settings
from reprlab.server.db import init_db, make_engine, session_factory
from reprlab.server.models import ApiKeyRow, AuditRow, JobRow, UserRow, utcnow

SPEC: dict[str, Any] = {
    "name": "users test",
    "model": {"name": "smollm2-135m-instruct"},
    "dataset": {"name": "sentiment", "n_eval": 20, "n_train": 10},
    "conditions": [{"name": "zero-shot", "k": 0}, {"name": "icl", "k": [1, 2], "seed": [0, 1]}],
}


@pytest.fixture()
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    try:
        init_db(engine)
        yield engine
    finally:
        engine.dispose()


@pytest.fixture()
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


def _audit(s: Session, action: str | None = None) -> list[AuditRow]:
    query = select(AuditRow).order_by(AuditRow.id)
    if action is not None:
        query = query.where(AuditRow.action == action)
    return list(s.scalars(query).all())


# --- the users module --------------------------------------------------------------------------


def test_user_names_are_checked() -> None:
    for good in ["alice", "a", "first.last@lab.org", "x" * 128, "u-1_2+3"]:
        assert users.check_user_name(good) == good
    for bad in ["", " ", "x" * 129, "a b", "-lead", "a/b", "a\x00b", "ünï", ".hidden"]:
        with pytest.raises(ValueError, match="invalid user name"):
            users.check_user_name(bad)


def test_users_are_created_changed_and_audited(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        users.create_user(s, "alice", actor="root")
        users.create_user(s, "ops", Role.ADMIN, actor="root", max_running_jobs=4)
        with pytest.raises(users.ConflictError, match="already exists"):
            users.create_user(s, "alice", actor="root")
        with pytest.raises(users.NotFoundError, match="no user 'nobody'"):
            users.update_user(s, "nobody", UserUpdate(role=Role.ADMIN), actor="root")
        alice = users.update_user(
            s, "alice", UserUpdate(role=Role.ADMIN, disabled=True, max_queued_jobs=3), actor="ops"
        )
        assert alice.role == "admin" and alice.disabled_at is not None
        assert (alice.max_running_jobs, alice.max_queued_jobs) == (None, 3)
        n = len(_audit(s))
        users.update_user(s, "alice", UserUpdate(role=Role.ADMIN, disabled=True), actor="ops")
        assert len(_audit(s)) == n  # nothing changed, nothing audited
        users.update_user(s, "alice", UserUpdate(disabled=False, max_queued_jobs=None), actor="ops")
    with sessions() as s:
        alice = users.require_user(s, "alice")
        assert alice.disabled_at is None and alice.max_queued_jobs is None
        assert users.effective_quotas(alice, 2, 20) == (2, 20)
        assert users.effective_quotas(users.require_user(s, "ops"), 2, 20) == (4, 20)
        got = [(a.actor, a.action, a.target, a.detail) for a in _audit(s)]
    assert got == [
        ("root", "user.create", "alice", {"role": "member"}),
        ("root", "user.create", "ops", {"role": "admin"}),
        ("root", "user.quota", "ops", {"max_running_jobs": 4, "max_queued_jobs": None}),
        ("ops", "user.role", "alice", {"from": "member", "to": "admin"}),
        ("ops", "user.disable", "alice", {}),
        ("ops", "user.quota", "alice", {"max_queued_jobs": {"from": None, "to": 3}}),
        ("ops", "user.enable", "alice", {}),
        ("ops", "user.quota", "alice", {"max_queued_jobs": {"from": 3, "to": None}}),
    ]


def test_expired_revoked_and_disabled_keys_are_refused(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        soon = utcnow() + timedelta(hours=1)
        row, key = users.issue_key(s, "alice", label="laptop", expires_at=soon, created_by="root")
        assert users.authenticate(s, key) == users.Caller("alice", Role.MEMBER, row.id)
        assert users.key_state(row) == "active"
        users.set_key_expiry(s, row.id, utcnow() - timedelta(seconds=1), actor="root")
        assert users.authenticate(s, key) is None and users.key_state(row) == "expired"
        users.set_key_expiry(s, row.id, None, actor="root")
        assert users.authenticate(s, key) is not None
        users.update_user(s, "alice", UserUpdate(disabled=True), actor="root")
        assert users.authenticate(s, key) is None
        users.update_user(s, "alice", UserUpdate(disabled=False), actor="root")
        assert users.authenticate(s, key) is not None
        users.revoke_key(s, row.id, actor="root")
        users.revoke_key(s, row.id, actor="root")  # again: no change, no second entry
        assert users.authenticate(s, key) is None and users.key_state(row) == "revoked"
        with pytest.raises(users.ConflictError, match="revoked"):
            users.set_key_expiry(s, row.id, None, actor="root")
        with pytest.raises(users.NotFoundError, match="no API key with id 999"):
            users.revoke_key(s, 999, actor="root")
        # A role given with a new key changes an existing user's role.
        users.create_api_key(s, "alice", role=Role.ADMIN, created_by="root")
        actions = [(a.action, a.target) for a in _audit(s)]
    assert actions == [
        ("user.create", "alice"), ("key.create", str(row.id)), ("key.expiry", str(row.id)),
        ("key.expiry", str(row.id)), ("user.disable", "alice"), ("user.enable", "alice"),
        ("key.revoke", str(row.id)), ("user.role", "alice"), ("key.create", str(row.id + 1)),
    ]  # fmt: skip


def test_keys_are_listed_without_secrets(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        k1 = users.create_api_key(s, "alice", label="ci")
        users.create_api_key(s, "bob")
        users.create_api_key(s, "alice")
        rows, total = users.list_keys(s)
        mine, n_mine = users.list_keys(s, "alice", limit=1)
        infos = [users.key_info(r).model_dump() for r in rows]
    assert total == 3 and n_mine == 2 and [r.id for r in rows] == [3, 2, 1]
    assert [r.id for r in mine] == [3]
    assert infos[2]["label"] == "ci" and infos[2]["prefix"] == k1[:8]
    assert infos[2]["created_by"] is None and infos[2]["state"] == "active"
    for info in infos:
        assert "key_hash" not in info and "key" not in info
        assert k1 not in str(info)


def test_last_used_at_is_written_at_most_once_a_minute(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    with sessions() as s:
        row, key = users.issue_key(s, "alice")
    writes: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            writes.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            with sessions() as s:
                assert users.authenticate(s, key) is not None
        assert len(writes) == 1
        with sessions() as s:
            first = s.get(ApiKeyRow, row.id).last_used_at  # type: ignore[union-attr]
            assert first is not None and abs((utcnow() - first).total_seconds()) < 60
            # A minute later the next request records the use again.
            s.get(ApiKeyRow, row.id).last_used_at = first - timedelta(seconds=61)  # type: ignore[union-attr]
            s.commit()
        with sessions() as s:
            users.authenticate(s, key)
            users.authenticate(s, key)
            again = s.get(ApiKeyRow, row.id, populate_existing=True).last_used_at  # type: ignore[union-attr]
        assert len(writes) == 3 and again is not None and again >= first  # 1 + the reset + 1
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_audit_log_is_filtered_and_paged_newest_first(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        for i in range(5):
            users.audit(s, "root" if i % 2 else "ops", "test.action", f"t{i}", {"i": i})
        users.audit(s, "ops", "other", "x")
        s.commit()
        rows, total = users.list_audit(s, action="test.action", limit=2)
        assert total == 5 and [r.target for r in rows] == ["t4", "t3"]
        rows, total = users.list_audit(s, action="test.action", limit=2, offset=4)
        assert total == 5 and [r.target for r in rows] == ["t0"]
        rows, total = users.list_audit(s, actor="root")
        assert total == 2 and [r.detail for r in rows] == [{"i": 3}, {"i": 1}]
        rows, total = users.list_audit(s, target="x")
        assert total == 1 and users.audit_entry(rows[0]).action == "other"


def test_job_submission_is_audited_in_its_own_transaction(sessions: sessionmaker[Session]) -> None:
    spec = JobSpec.model_validate(SPEC)
    with sessions() as s:
        with users.auditing_job_submission(s, "alice", spec):
            job = crud.create_job(s, "alice", spec)
        crud.create_job(s, "alice", spec)  # outside the block: not audited
        entries = _audit(s, "job.submit")
        assert [(e.actor, e.target, e.detail) for e in entries] == [
            ("alice", job.id, {"name": "users test", "model": "smollm2-135m-instruct",
                               "n_conditions": 5}),
        ]  # fmt: skip
        # If the job's insert fails, its audit entry is rolled back with it.
        with users.auditing_job_submission(s, "mallory", spec), pytest.raises(IntegrityError):
            s.add(JobRow(id=job.id, owner="mallory", status="queued", spec={}, progress={}))
            s.commit()
        s.rollback()
        assert [e.actor for e in _audit(s, "job.submit")] == ["alice"]


def test_trusted_models(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        assert not users.is_model_trusted(s, "org/m")
        users.trust_model(s, "org/m", actor="root")
        users.trust_model(s, "org/m", actor="ops")  # already trusted: unchanged
        users.trust_model(s, "/models/local", actor="ops")
        assert users.is_model_trusted(s, "org/m") and not users.is_model_trusted(s, "org/M")
        listed = [(r.model, r.allowed_by) for r in users.list_trusted_models(s)]
        assert listed == [("/models/local", "ops"), ("org/m", "root")]
        users.untrust_model(s, "org/m", actor="ops")
        assert not users.is_model_trusted(s, "org/m")
        with pytest.raises(users.NotFoundError, match="not in the trusted list"):
            users.untrust_model(s, "org/m", actor="ops")
        actions = [(a.actor, a.action, a.target) for a in _audit(s)]
    assert actions == [("root", "model.trust", "org/m"), ("ops", "model.trust", "/models/local"),
                       ("ops", "model.untrust", "org/m")]  # fmt: skip


# --- the admin REST API ------------------------------------------------------------------------


@dataclass
class Api:
    client: TestClient
    app: FastAPI
    root: dict[str, str]
    alice: dict[str, str]
    bob: dict[str, str]

    @property
    def sessions(self) -> sessionmaker[Session]:
        sessions: sessionmaker[Session] = self.app.state.sessions
        return sessions

    def call(self, method: str, path: str, who: dict[str, str], status: int, **kw: Any) -> Any:
        response = self.client.request(method, path, headers=who, **kw)
        assert response.status_code == status, response.text
        if status == 204:
            return None
        body = response.json()
        if status >= 400:
            assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "hint"}
            return body["error"]
        return body


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url,
                    artifact_url=f"file://{tmp_path / 'artifacts'}")  # fmt: skip


@pytest.fixture()
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    app = create_app(_settings(tmp_path, database_url), queue=RecordingQueue())
    with app.state.sessions() as s:
        root = _bearer(users.create_api_key(s, "root", role=Role.ADMIN, created_by="cli:test"))
        alice = _bearer(users.create_api_key(s, "alice"))
        bob = _bearer(users.create_api_key(s, "bob"))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, app, root, alice, bob)


def test_admin_routes_need_an_admin_key(api: Api) -> None:
    error = api.call("GET", "/v1/admin/users", api.alice, 403)
    assert error["type"] == "Forbidden" and "admin API key" in error["message"]
    assert "'alice' is a member" in error["message"] and "set-role" in error["hint"]
    api.call("GET", "/v1/admin/users", {}, 401)
    assert api.call("GET", "/v1/admin/users", api.root, 200)["total"] == 3


def test_me(api: Api) -> None:
    me = api.call("GET", "/v1/me", api.alice, 200)
    assert me["name"] == "alice" and me["role"] == "member" and me["key_id"] == 2
    assert (me["max_running_jobs"], me["max_queued_jobs"]) == (2, 20)
    api.call("PATCH", "/v1/admin/users/alice", api.root, 200, json={"max_running_jobs": 5})
    assert api.call("GET", "/v1/me", api.alice, 200)["max_running_jobs"] == 5
    assert api.call("GET", "/v1/me", api.root, 200)["role"] == "admin"


def test_admin_manages_users(api: Api) -> None:
    carol = api.call("POST", "/v1/admin/users", api.root, 201,
                     json={"name": "carol", "role": "admin", "max_queued_jobs": 7})  # fmt: skip
    assert carol["role"] == "admin" and carol["disabled_at"] is None
    assert (carol["max_queued_jobs"], carol["effective_max_queued_jobs"]) == (7, 7)
    assert (carol["max_running_jobs"], carol["effective_max_running_jobs"]) == (None, 2)
    error = api.call("POST", "/v1/admin/users", api.root, 409, json={"name": "carol"})
    assert "already exists" in error["message"]
    for bad, needle in [({"name": "a b"}, "name"), ({"name": "x", "role": "root"}, "role"),
                        ({"name": "x", "max_running_jobs": 0}, "max_running_jobs"),
                        ({"name": "x", "owner": "y"}, "owner")]:  # fmt: skip
        assert needle in api.call("POST", "/v1/admin/users", api.root, 422, json=bad)["message"]
    listed = api.call("GET", "/v1/admin/users", api.root, 200)
    assert [u["name"] for u in listed["users"]] == ["alice", "bob", "carol", "root"]
    assert api.call("GET", "/v1/admin/users/carol", api.root, 200) == carol
    api.call("GET", "/v1/admin/users/nobody", api.root, 404)
    api.call("PATCH", "/v1/admin/users/nobody", api.root, 404, json={"role": "admin"})
    api.call("GET", "/v1/admin/users/a%20b", api.root, 422)

    bob = api.call("PATCH", "/v1/admin/users/bob", api.root, 200,
                   json={"role": "admin", "max_running_jobs": 3})  # fmt: skip
    assert bob["role"] == "admin" and bob["effective_max_running_jobs"] == 3
    assert api.call("GET", "/v1/admin/users", api.bob, 200)["total"] == 4  # bob is an admin now
    bob = api.call("PATCH", "/v1/admin/users/bob", api.root, 200,
                   json={"role": "member", "max_running_jobs": None})  # fmt: skip
    assert bob["max_running_jobs"] is None and bob["effective_max_running_jobs"] == 2
    api.call("GET", "/v1/admin/users", api.bob, 403)
    api.call("PATCH", "/v1/admin/users/bob", api.root, 200, json={"disabled": True})
    assert "revoked" in api.call("GET", "/v1/me", api.bob, 401)["message"]
    api.call("PATCH", "/v1/admin/users/bob", api.root, 200, json={"disabled": False})
    api.call("GET", "/v1/me", api.bob, 200)
    for own in ({"role": "member"}, {"disabled": True}):
        error = api.call("PATCH", "/v1/admin/users/root", api.root, 409, json=own)
        assert "yourself" in error["message"] or "your own" in error["message"]
    api.call("PATCH", "/v1/admin/users/bob", api.root, 422, json={"disabled": "maybe"})
    actions = [e["action"] for e in api.call("GET", "/v1/admin/audit?actor=root&limit=500",
                                             api.root, 200)["entries"]]  # fmt: skip
    assert actions == ["user.enable", "user.disable", "user.quota", "user.role", "user.quota",
                       "user.role", "user.quota", "user.create"]  # fmt: skip


def test_admin_manages_keys(api: Api) -> None:
    new = api.call("POST", "/v1/admin/keys", api.root, 201,
                   json={"user": "alice", "label": "ci", "expires_in_s": 3600})  # fmt: skip
    assert new["key"].startswith("rl_") and new["owner"] == "alice" and new["label"] == "ci"
    assert new["created_by"] == "root" and new["state"] == "active"
    expires = datetime.fromisoformat(new["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert api.call("GET", "/v1/me", _bearer(new["key"]), 200)["key_id"] == new["id"]

    listed = api.call("GET", "/v1/admin/keys?user=alice", api.root, 200)
    assert listed["total"] == 2 and [k["id"] for k in listed["keys"]] == [new["id"], 2]
    assert all("key" not in k and "key_hash" not in k for k in listed["keys"])
    assert new["key"] not in api.client.get("/v1/admin/keys", headers=api.root).text
    assert api.call("GET", f"/v1/admin/keys/{new['id']}", api.root, 200)["last_used_at"]

    error = api.call("POST", "/v1/admin/keys", api.root, 404, json={"user": "nobody"})
    assert "no user 'nobody'" in error["message"]
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    for bad, needle in [
        ({"user": "alice", "expires_at": past}, "in the past"),
        ({"user": "alice", "expires_in_s": 10}, "expires_in_s"),
        ({"user": "alice", "expires_in_s": 3600, "expires_at": "2099-01-01T00:00:00Z"}, "not both"),
        ({"user": "alice", "expires_at": "9999-12-31T23:59:59-05:00"}, "out of range"),
        ({"user": "alice", "label": "a\nb"}, "label"),
    ]:
        assert needle in api.call("POST", "/v1/admin/keys", api.root, 422, json=bad)["message"]

    url = f"/v1/admin/keys/{new['id']}"
    at = api.call("PATCH", url, api.root, 200, json={"expires_at": "2099-01-01T00:00:00"})
    assert at["expires_at"].startswith("2099-01-01T00:00:00")
    assert api.call("PATCH", url, api.root, 200, json={"expires_at": None})["expires_at"] is None
    in_ = api.call("PATCH", url, api.root, 200, json={"expires_in_s": 86400})
    assert in_["expires_at"] is not None
    for bad in ({}, {"expires_in_s": None}, {"expires_at": past}, {"expires_in_s": 60, "x": 1}):
        api.call("PATCH", url, api.root, 422, json=bad)
    revoked = api.call("POST", f"{url}/revoke", api.root, 200)
    assert revoked["state"] == "revoked" and revoked["revoked_at"] is not None
    assert api.call("POST", f"{url}/revoke", api.root, 200)["revoked_at"] == revoked["revoked_at"]
    api.call("GET", "/v1/me", _bearer(new["key"]), 401)
    assert "revoked" in api.call("PATCH", url, api.root, 409, json={"expires_at": None})["message"]
    for path in ("/v1/admin/keys/999", "/v1/admin/keys/999/revoke"):
        api.call("GET" if "revoke" not in path else "POST", path, api.root, 404)
    api.call("GET", "/v1/admin/keys/0", api.root, 422)
    # An admin cannot lock themselves out with the key they are using.
    assert "key of this request" in api.call("POST", "/v1/admin/keys/1/revoke", api.root,
                                             409)["message"]  # fmt: skip
    api.call("GET", "/v1/admin/keys/abc", api.root, 422)
    actions = [(e["action"], e["target"]) for e in api.call(
        "GET", "/v1/admin/audit?actor=root", api.root, 200)["entries"]]  # fmt: skip
    k = str(new["id"])
    assert actions == [("key.revoke", k), ("key.expiry", k), ("key.expiry", k),
                       ("key.expiry", k), ("key.create", k)]  # fmt: skip


def test_admin_reads_the_audit_log_of_jobs(api: Api) -> None:
    job = api.call("POST", "/v1/jobs", api.alice, 201, json=SPEC)
    api.call("POST", f"/v1/jobs/{job['id']}/cancel", api.root, 200)
    log = api.call("GET", "/v1/admin/audit", api.root, 200)
    assert [(e["actor"], e["action"], e["target"]) for e in log["entries"][:2]] == [
        ("root", "job.cancel", job["id"]), ("alice", "job.submit", job["id"]),
    ]  # fmt: skip
    assert log["entries"][1]["detail"] == {
        "name": "users test", "model": "smollm2-135m-instruct", "n_conditions": 5,
    }  # fmt: skip
    assert log["entries"][0]["detail"] == {"owner": "alice", "status": "cancelled"}
    assert log["total"] == 2 + 3 + 3  # 3 users and their 3 keys were created first
    page = api.call("GET", "/v1/admin/audit?action=key.create&limit=2&offset=1", api.root, 200)
    assert page["total"] == 3 and [e["target"] for e in page["entries"]] == ["2", "1"]
    api.call("GET", "/v1/admin/audit?limit=0", api.root, 422)
    api.call("GET", "/v1/admin/audit?actor=%00", api.root, 422)
    # A refused cancel (finished job) is not audited.
    api.call("POST", f"/v1/jobs/{job['id']}/cancel", api.alice, 409)
    assert api.call("GET", "/v1/admin/audit?action=job.cancel", api.root, 200)["total"] == 1


def test_admin_manages_trusted_models(api: Api) -> None:
    assert api.call("GET", "/v1/admin/trusted-models", api.root, 200) == {"models": []}
    added = api.call("POST", "/v1/admin/trusted-models", api.root, 201, json={"model": "org/m"})
    assert added["model"] == "org/m" and added["allowed_by"] == "root"
    api.call("POST", "/v1/admin/trusted-models", api.root, 201, json={"model": "org/m"})
    api.call("POST", "/v1/admin/trusted-models", api.root, 422, json={"model": ""})
    with api.sessions() as s:
        assert users.is_model_trusted(s, "org/m")
    listed = api.call("GET", "/v1/admin/trusted-models", api.root, 200)["models"]
    assert [m["model"] for m in listed] == ["org/m"]
    api.call("DELETE", "/v1/admin/trusted-models?model=org/m", api.root, 204)
    api.call("DELETE", "/v1/admin/trusted-models?model=org/m", api.root, 404)
    with api.sessions() as s:
        assert not users.is_model_trusted(s, "org/m")
    actions = [e["action"] for e in api.call("GET", "/v1/admin/audit?actor=root", api.root,
                                             200)["entries"]]  # fmt: skip
    assert actions == ["model.untrust", "model.trust"]


def test_admin_lists_anyones_jobs_members_only_their_own(api: Api) -> None:
    a = api.call("POST", "/v1/jobs", api.alice, 201, json=SPEC)["id"]
    b = api.call("POST", "/v1/jobs", api.bob, 201, json=SPEC)["id"]
    ids = lambda page: {j["id"] for j in page["jobs"]}  # noqa: E731
    assert ids(api.call("GET", "/v1/jobs", api.root, 200)) == {a, b}
    assert ids(api.call("GET", "/v1/jobs?owner=alice", api.root, 200)) == {a}
    assert ids(api.call("GET", "/v1/jobs?owner=nobody", api.root, 200)) == set()
    assert ids(api.call("GET", "/v1/jobs?owner=bob", api.bob, 200)) == {b}
    error = api.call("GET", "/v1/jobs?owner=alice", api.bob, 403)
    assert "'bob'" in error["message"] and "'alice'" in error["message"]
    api.call("GET", "/v1/jobs?owner=a%20b", api.root, 422)
    assert api.call("GET", f"/v1/jobs/{a}", api.root, 200)["owner"] == "alice"


# --- the SDK against a real server --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture()
def live_server(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A real uvicorn serving the app on 127.0.0.1 (SQLite): (url, admin key, member key)."""
    app = create_app(_settings(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}"),
                     queue=RecordingQueue())  # fmt: skip
    with app.state.sessions() as s:
        admin = users.create_api_key(s, "root", role=Role.ADMIN)
        member = users.create_api_key(s, "alice")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{port}", admin, member
    server.should_exit = True
    thread.join(10)


def test_sdk_admin_operations(live_server: tuple[str, str, str]) -> None:
    from reprlab.client import Client, ConflictError, NotFoundError, PermissionDeniedError

    url, admin_key, member_key = live_server
    with Client(url, admin_key, max_retries=0) as admin, Client(url, member_key) as member:
        assert member.me().name == "alice" and admin.me().role is Role.ADMIN
        with pytest.raises(PermissionDeniedError, match="admin API key"):
            member.admin.list_users()
        admin.admin.create_user("carol", "member", max_queued_jobs=4)
        with pytest.raises(ConflictError):
            admin.admin.create_user("carol")
        assert admin.admin.set_role("carol", "admin").role is Role.ADMIN
        assert admin.admin.disable_user("carol").disabled_at is not None
        assert admin.admin.enable_user("carol").disabled_at is None
        carol = admin.admin.update_user("carol", max_running_jobs=6)
        assert (carol.max_running_jobs, carol.max_queued_jobs) == (6, 4)
        carol = admin.admin.update_user("carol", max_queued_jobs=None)
        assert (carol.max_running_jobs, carol.max_queued_jobs) == (6, None)
        assert [u.name for u in admin.admin.list_users().users] == ["alice", "carol", "root"]
        assert admin.admin.get_user("carol").effective_max_queued_jobs == 20

        new = admin.admin.create_key("carol", label="nb", expires_in=timedelta(days=1))
        assert new.owner == "carol" and new.expires_at is not None
        with Client(url, new.key) as carol_client:
            assert carol_client.me().name == "carol"
        at = datetime(2099, 1, 2, tzinfo=UTC)
        assert admin.admin.set_key_expiry(new.id, at).expires_at == at
        assert admin.admin.set_key_expiry(new.id, expires_in=3600).expires_at is not None
        assert admin.admin.set_key_expiry(new.id).expires_at is None
        assert [k.id for k in admin.admin.list_keys(user="carol").keys] == [new.id]
        assert admin.admin.get_key(new.id).label == "nb"
        assert admin.admin.revoke_key(new.id).state == "revoked"
        with pytest.raises(NotFoundError):
            admin.admin.revoke_key(999)

        assert admin.admin.trust_model("org/m").allowed_by == "root"
        assert [m.model for m in admin.admin.trusted_models()] == ["org/m"]
        admin.admin.untrust_model("org/m")
        with pytest.raises(NotFoundError):
            admin.admin.untrust_model("org/m")
        log = admin.admin.audit(actor="root", limit=3)
        assert [e.action for e in log.entries] == ["model.untrust", "model.trust", "key.revoke"]
        assert log.total == 14


# --- the CLI, directly on the database --------------------------------------------------------


@pytest.fixture()
def cli_env(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The environment of the CLI (also set in this process, for direct calls)."""
    from reprlab.server.config import get_settings

    env = {"REPRLAB_HOME": str(tmp_path / "home"), "REPRLAB_DATABASE_URL": database_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


def _cli(env: dict[str, str], *args: str, code: int = 0) -> str:
    from reprlab.client.cli import app

    result = CliRunner().invoke(app, ["admin", *args], env={**env, "COLUMNS": "200"})
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def test_cli_admin_commands(cli_env: dict[str, str]) -> None:
    from reprlab.client.cli import _actor

    _cli(cli_env, "create-user", "ops", "--role", "admin")
    key = _cli(cli_env, "create-key", "alice", "--expires-in", "30d", "--label", "nb", "--quiet")
    assert key.strip().startswith("rl_") and len(key.splitlines()) == 1
    shown = _cli(cli_env, "create-key", "bob", "--role", "admin")
    assert "shown once" in shown and "rl_" in shown
    users_out = _cli(cli_env, "list-users")
    assert all(n in users_out for n in ("ops", "alice", "bob")) and "admin" in users_out
    keys_out = _cli(cli_env, "list-keys", "--user", "alice")
    assert "nb" in keys_out and "active" in keys_out and "bob" not in keys_out
    assert key.strip() not in _cli(cli_env, "list-keys")

    _cli(cli_env, "expire-key", "1", "--in", "7d")
    _cli(cli_env, "expire-key", "1", "--at", "2099-01-01T12:00")
    _cli(cli_env, "expire-key", "1", "--never")
    assert "past" in _cli(cli_env, "expire-key", "1", "--at", "2000-01-01", code=1)
    assert "exactly one" in _cli(cli_env, "expire-key", "1", "--in", "7d", "--never", code=1)
    assert "invalid duration" in _cli(cli_env, "expire-key", "1", "--in", "7 years", code=1)
    _cli(cli_env, "set-role", "alice", "admin")
    _cli(cli_env, "set-quota", "alice", "--running", "3", "--queued", "default")
    assert "invalid quota" in _cli(cli_env, "set-quota", "alice", "--running", "0", code=1)
    _cli(cli_env, "disable-user", "alice")
    _cli(cli_env, "enable-user", "alice")
    _cli(cli_env, "revoke-key", "1")
    _cli(cli_env, "trust-model", "org/m")
    assert "org/m" in _cli(cli_env, "trusted-models")
    _cli(cli_env, "untrust-model", "org/m")
    assert "not in the trusted list" in _cli(cli_env, "untrust-model", "org/m", code=1)
    assert "no API key with id 99" in _cli(cli_env, "revoke-key", "99", code=1)
    assert "no user 'nobody'" in _cli(cli_env, "set-role", "nobody", "admin", code=1)
    assert "already exists" in _cli(cli_env, "create-user", "ops", code=1)
    assert "invalid user name" in _cli(cli_env, "create-key", "a b", code=1)

    engine = make_engine(cli_env["REPRLAB_DATABASE_URL"])
    try:
        with session_factory(engine)() as s:
            alice = users.require_user(s, "alice")
            assert alice.role == "admin" and alice.disabled_at is None
            assert (alice.max_running_jobs, alice.max_queued_jobs) == (3, None)
            assert users.authenticate(s, key.strip()) is None  # revoked
            entries = _audit(s)
            assert {e.actor for e in entries} == {_actor()} and _actor().startswith("cli:")
            assert [e.action for e in entries] == [
                "user.create", "user.create", "key.create", "user.create", "key.create",
                "key.expiry", "key.expiry", "key.expiry", "user.role", "user.quota",
                "user.disable", "user.enable", "key.revoke", "model.trust", "model.untrust",
            ]  # fmt: skip
            n = s.scalar(select(func.count()).select_from(UserRow))
    finally:
        engine.dispose()
    assert n == 3
    audit_out = _cli(cli_env, "audit", "--limit", "2")
    assert "model.untrust" in audit_out and "2 of 15" in audit_out


def test_up_makes_the_local_user_an_admin(cli_env: dict[str, str]) -> None:
    from reprlab.client.cli import _local_admin_key, _os_user

    key, name = _local_admin_key(None)
    assert key is not None and name == _os_user()
    engine = make_engine(cli_env["REPRLAB_DATABASE_URL"])
    try:
        sessions = session_factory(engine)
        with sessions() as s:
            caller = users.authenticate(s, key)
            assert caller is not None and caller.is_admin
            # A key from before roles existed: its owner is made an admin, the key kept.
            old = users.create_api_key(s, "someone")
        assert _local_admin_key(old) == (None, "someone")
        with sessions() as s:
            assert users.require_user(s, "someone").role == "admin"
            users.revoke_key(s, 2, actor="test")
        new, _ = _local_admin_key(old)  # a key that no longer works is replaced
        assert new is not None and new != old
    finally:
        engine.dispose()
