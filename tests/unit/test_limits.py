"""Refusals at job submission: per-job limits, model and path policy, per-user quotas, request
bodies; and the worker's side (trust_remote_code reaches transformers only when asked).

Through the real app (FastAPI TestClient, or real uvicorn where sockets matter) on real SQLite
and PostgreSQL. Every refusal is checked for its status, error type, a message naming the limit
and the allowed value, and that nothing was stored or enqueued.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from live_server import serve
from recording_queue import RecordingQueue
from sqlalchemy import func, select

from reprlab.schemas.recipes import RECIPES
from reprlab.schemas.specs import JobSpec, ModelRef
from reprlab.server import crud, limits, users
from reprlab.server.app import create_app
from reprlab.server.config import Settings
from reprlab.server.errors import APIError
from reprlab.server.models import JobRow, TrustedModelRow, UserRow, utcnow
from reprlab.server.uploads import json_depth

SPEC: dict[str, Any] = {
    "model": {"name": "smollm2-135m-instruct", "device": "cpu"},
    "dataset": {"name": "sentiment", "n_eval": 40, "n_train": 20},
    "conditions": [{"name": "zero-shot", "k": 0}],
}


@dataclass
class Api:
    client: TestClient
    app: FastAPI
    queue: RecordingQueue
    alice: dict[str, str]
    bob: dict[str, str]
    roots: Path

    def post(self, spec: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        return self.client.post("/v1/jobs", json=spec, headers=headers or self.alice)

    def n_jobs(self) -> int:
        with self.app.state.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(JobRow)) or 0)


def make_app(tmp_path: Path, database_url: str, **overrides: Any) -> tuple[FastAPI, RecordingQueue]:
    settings = Settings(
        home=tmp_path / "home", database_url=database_url, broker_url="redis://127.0.0.1:1/0",
        artifact_url=f"file://{tmp_path / 'artifacts'}", model_roots=[tmp_path / "models"],
        data_roots=[tmp_path / "data"], rate_limit_per_s=0, **overrides,
    )  # fmt: skip
    queue = RecordingQueue()
    return create_app(settings, queue=queue), queue


@pytest.fixture()
def make_api(tmp_path: Path, database_url: str) -> Iterator[Any]:
    """Build the API with setting overrides: `make_api(max_items=10)`."""
    clients: list[TestClient] = []
    for name in ("models", "data", "outside"):
        (tmp_path / name).mkdir()

    def make(**overrides: Any) -> Api:
        app, queue = make_app(tmp_path, database_url, **overrides)
        with app.state.sessions() as s:
            alice = {"Authorization": f"Bearer {users.create_api_key(s, 'alice')}"}
            bob = {"Authorization": f"Bearer {users.create_api_key(s, 'bob')}"}
        client = TestClient(app, raise_server_exceptions=False).__enter__()
        clients.append(client)
        return Api(client, app, queue, alice, bob, tmp_path)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def refused(api: Api, response: Any, status: int, type_: str, *words: str) -> str:
    """Check a refusal: status, error shape, message words, and that nothing was stored."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "hint"}
    assert body["error"]["type"] == type_
    message: str = body["error"]["message"]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert body["error"]["hint"]
    assert api.n_jobs() == 0 and api.queue.ids == []
    return message


# --- per-job limits ----------------------------------------------------------------------------


def test_builtin_recipes_fit_the_default_limits(make_api: Any) -> None:
    api = make_api()
    for recipe in RECIPES.values():
        limits.check_job_limits(recipe.job_spec(), Settings())
        assert api.post(recipe.spec).status_code == 201
    assert len(api.queue.ids) == len(RECIPES)


def _sft(**fields: Any) -> dict[str, Any]:
    return {"paradigm": "sft", "name": "sft", **fields}


LIMIT_CASES = [
    ({"max_items": 50}, {"dataset": {"name": "sentiment", "n_eval": 40, "n_train": 20}},
     ["dataset.n_eval + dataset.n_train is 60", "max_items = 50"]),
    ({"max_items": 50},
     {"dataset": {"source": "inline", "n_eval": 5, "n_train": 5,
                  "items": [{"input": f"q{i}", "output": "a"} for i in range(51)]}},
     ["inline dataset.items is 51", "max_items = 50"]),
    ({"max_prompt_tokens": 1024}, {"extraction": {"max_length": 2048}},
     ["extraction.max_length (tokens per prompt) is 2048", "max_prompt_tokens = 1024"]),
    ({"max_prompt_tokens": 256}, {"extraction": {"max_length": 256}, "conditions": [_sft()]},
     ["conditions['sft'].max_length (tokens per training text) is 512",
      "max_prompt_tokens = 256"]),
    ({"max_layers": 4}, {"extraction": {"layers": [0, 1, 2, 3, -1]}},
     ["extraction.layers is 5", "max_layers = 4"]),
    ({"max_conditions": 10}, {"conditions": [{"name": "icl", "k": [0, 1, 2, 3, 4, 5],
                                              "seed": [0, 1]}]},
     ["conditions after k/seed sweeps is 12", "max_conditions = 10"]),
    ({"max_checkpoints": 3}, {"conditions": [_sft(checkpoints=[1, 2], seed=[0, 1])]},
     ["SFT checkpoints after sweeps is 4", "max_checkpoints = 3"]),
    # 10 epochs x ceil(20 items / batch 16) = 20 steps per seed, 3 seeds.
    ({"max_train_steps": 50}, {"conditions": [_sft(epochs=10, seed=[0, 1, 2])]},
     ["steps of all SFT conditions together (sft.s0: 20, sft.s1: 20, sft.s2: 20) is 60",
      "max_train_steps = 50"]),
    ({"max_train_steps": 50}, {"conditions": [_sft(steps=51)]},
     ["(sft: 51) is 51", "max_train_steps = 50"]),
    # train_on='demos' trains on the k demonstrations: 30 epochs x ceil(4 / 2) = 60 steps.
    ({"max_train_steps": 59},
     {"conditions": [{"name": "icl", "k": 4, "selection": "fixed"},
                     _sft(train_on="demos", k=4, epochs=30, batch_size=2)]},
     ["(sft: 60) is 60", "max_train_steps = 59"]),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "patch", "words"), LIMIT_CASES)
def test_spec_over_a_per_job_limit_is_422_naming_it(
    make_api: Any, settings: dict[str, int], patch: dict[str, Any], words: list[str]
) -> None:
    api = make_api(**settings)
    refused(api, api.post({**SPEC, **patch}), 422, "LimitExceeded", *words)


def test_the_largest_sweep_the_schema_allows_is_refused_without_a_hang(make_api: Any) -> None:
    # 64 conditions x 32 k x 32 seeds = 65536: the name check once took minutes (quadratic).
    api = make_api()
    sweep = {"k": list(range(32)), "seed": list(range(32))}
    spec = {**SPEC, "conditions": [{"name": f"c{i}", **sweep} for i in range(64)]}
    start = time.monotonic()
    refused(api, api.post(spec), 422, "LimitExceeded", "is 65536", "max_conditions = 128")
    assert time.monotonic() - start < 15


def test_a_spec_exactly_at_each_limit_is_accepted(make_api: Any) -> None:
    api = make_api(max_items=60, max_prompt_tokens=512, max_layers=2, max_conditions=3,
                   max_checkpoints=2, max_train_steps=4)  # fmt: skip
    spec = {
        **SPEC,
        "extraction": {"max_length": 512, "layers": [0, -1]},
        "conditions": [{"name": "icl", "k": [0, 1]}, _sft(checkpoints=[1, 2], epochs=2)],
    }  # 60 items; 3 conditions; 2 checkpoints; 2 epochs x ceil(20 / 16) = 4 steps
    assert api.post(spec).status_code == 201


# --- models, paths, remote code ----------------------------------------------------------------


def test_hub_ids_need_the_allow_list(make_api: Any) -> None:
    api = make_api()
    spec = {**SPEC, "model": {"name": "HuggingFaceTB/SmolLM2-135M"}}
    refused(api, api.post(spec), 403, "Forbidden", "'HuggingFaceTB/SmolLM2-135M'",
            "model allow-list", "none: hub ids are off")  # fmt: skip
    api = make_api(model_allowlist=["HuggingFaceTB/*", "acme/tiny-?"])
    msg = refused(api, api.post({**SPEC, "model": {"name": "evil/model"}}), 403, "Forbidden",
                  "HuggingFaceTB/*, acme/tiny-?")  # fmt: skip
    assert "REPRLAB_MODEL_ALLOWLIST" not in msg  # the setting is in the hint
    assert api.post(spec).status_code == 201
    assert api.post({**SPEC, "model": {"name": "acme/tiny-1"}}).status_code == 201
    # Glob matching is case-sensitive, as hub ids are written in specs.
    assert api.post({**SPEC, "model": {"name": "huggingfacetb/x"}}).status_code == 403
    # Built-in (and unknown bare) names are the worker's to resolve; no allow-list entry.
    assert api.post({**SPEC, "model": {"name": "smollm2-135m-instruct"}}).status_code == 201


def test_local_model_paths_must_resolve_under_the_model_roots(make_api: Any) -> None:
    api = make_api()
    models, outside = api.roots / "models", api.roots / "outside"
    (outside / "secret").mkdir()
    (models / "tiny").mkdir()
    (models / "link").symlink_to(outside / "secret", target_is_directory=True)

    def post(name: str) -> Any:
        return api.post({**SPEC, "model": {"name": name}})

    for name, words in [
        (str(outside / "secret"), ["outside the worker's model roots", str(models)]),
        (str(models / "link"), ["resolved to", str(outside / "secret")]),
        (f"{models}/../outside/secret", ["contains '..'"]),
        (f"{models}/tiny/../tiny", ["contains '..'"]),
    ]:
        refused(api, post(name), 403, "Forbidden", "REPRLAB_MODEL_ROOTS", *words)
    assert post(str(models / "tiny")).status_code == 201
    assert post(str(models / "not-yet-there")).status_code == 201  # the worker says it's missing


def test_jsonl_paths_must_resolve_under_the_data_roots(make_api: Any) -> None:
    api = make_api()
    data, outside = api.roots / "data", api.roots / "outside"
    (outside / "s.jsonl").write_text('{"input": "a", "output": "b"}\n')
    (data / "d.jsonl").write_text('{"input": "a", "output": "b"}\n')
    (data / "link.jsonl").symlink_to(outside / "s.jsonl")

    def post(path: str) -> Any:
        return api.post({**SPEC, "dataset": {"source": "jsonl", "path": path}})

    for path, words in [
        (str(outside / "s.jsonl"), ["outside the worker's data roots", str(data)]),
        ("link.jsonl", ["resolved to", str(outside / "s.jsonl")]),
        ("sub/../../outside/s.jsonl", ["contains '..'"]),
    ]:
        refused(api, post(path), 403, "Forbidden", "REPRLAB_DATA_ROOTS", *words)
    assert post("d.jsonl").status_code == 201
    assert post(str(data / "d.jsonl")).status_code == 201


def test_demo_datasets_and_demos_files_are_held_to_the_data_roots(make_api: Any) -> None:
    api = make_api()
    data, outside = api.roots / "data", api.roots / "outside"
    (outside / "d.json").write_text('{"0": [0]}')
    (data / "d.json").write_text('{"0": [0]}')
    (outside / "s.jsonl").write_text('{"input": "a", "output": "b"}\n')
    icl = {"name": "icl", "k": 1}
    for cond, words in [
        ({**icl, "selection": "given", "demos_file": str(outside / "d.json")},
         "conditions.icl.demos_file"),
        ({**icl, "demo_dataset": {"source": "jsonl", "path": str(outside / "s.jsonl")}},
         "conditions.icl.demo_dataset path"),
    ]:  # fmt: skip
        spec = {**SPEC, "conditions": [cond]}
        refused(api, api.post(spec), 403, "Forbidden", "REPRLAB_DATA_ROOTS", words)
    ok = {**SPEC, "conditions": [{**icl, "selection": "given", "demos_file": "d.json"}]}
    assert api.post(ok).status_code == 201


def test_paths_that_cannot_be_resolved_are_refused_not_errors(make_api: Any) -> None:
    api = make_api()
    data = api.roots / "data"
    (data / "loop-a").symlink_to(data / "loop-b")
    (data / "loop-b").symlink_to(data / "loop-a")

    def post(path: str) -> Any:
        return api.post({**SPEC, "dataset": {"source": "jsonl", "path": path}})

    refused(api, post("loop-a"), 403, "Forbidden", "cannot be resolved", "Symlink loop")
    refused(api, post("~no-such-user-here/d.jsonl"), 403, "Forbidden", "cannot be expanded")
    assert post("x" * 300).status_code == 201  # too long a name for the file system: the
    # worker fails the job saying so; the server only checks that it stays under the root


def test_trust_remote_code_only_for_a_model_an_admin_trusts(make_api: Any) -> None:
    api = make_api()
    (api.roots / "models" / "custom").mkdir()
    name = str(api.roots / "models" / "custom")
    spec = {**SPEC, "model": {"name": name, "trust_remote_code": True}}
    msg = refused(api, api.post(spec), 403, "Forbidden", "trust_remote_code", repr(name))
    assert "trust-model" in api.post(spec).json()["error"]["hint"]
    assert "no admin has trusted" in msg
    with api.app.state.sessions() as s:
        s.add(TrustedModelRow(model=name, allowed_by="root", allowed_at=utcnow()))
        s.commit()
    assert api.post(spec).status_code == 201
    other = {**SPEC, "model": {"name": "smollm2-135m-instruct", "trust_remote_code": True}}
    assert api.post(other).status_code == 403  # trusting one model trusts no other


# --- quotas ------------------------------------------------------------------------------------


def test_queued_quota_refuses_with_429_and_frees_up(make_api: Any) -> None:
    api = make_api(max_queued_jobs=2)
    first = api.post(SPEC).json()
    assert api.post(SPEC).status_code == 201
    response = api.post(SPEC)
    assert response.status_code == 429
    assert "Retry-After" not in response.headers  # frees up when jobs end, not after a delay
    error = response.json()["error"]
    assert error["type"] == "QuotaExceeded"
    assert "max_queued_jobs" in error["message"] and "2 queued jobs" in error["message"]
    assert "at most 2" in error["message"] and "cancel" in error["hint"]
    assert api.n_jobs() == 2 and len(api.queue.ids) == 2
    # Another user's quota is their own.
    assert api.post(SPEC, api.bob).status_code == 201
    # A finished (here: cancelled) job no longer counts.
    assert api.client.post(f"/v1/jobs/{first['id']}/cancel", headers=api.alice).status_code == 200
    assert api.post(SPEC).status_code == 201


def test_a_user_override_replaces_the_default_quota(make_api: Any) -> None:
    api = make_api(max_queued_jobs=20)
    with api.app.state.sessions() as s:
        user = s.scalar(select(UserRow).where(UserRow.name == "alice"))
        assert user is not None
        user.max_queued_jobs = 1
        s.commit()
    assert api.post(SPEC).status_code == 201
    message = refused_after(api, api.post(SPEC), 1)
    assert "at most 1 may wait" in message
    assert api.post(SPEC, api.bob).status_code == 201


def refused_after(api: Api, response: Any, n_stored: int) -> str:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["type"] == "QuotaExceeded"
    assert api.n_jobs() == n_stored and len(api.queue.ids) == n_stored
    message: str = response.json()["error"]["message"]
    return message


def test_active_quota_counts_running_and_queued_jobs(make_api: Any) -> None:
    # Running jobs beyond max_running_jobs (e.g. the quota was lowered while they ran) leave
    # less room in the queue: at most max_running_jobs + max_queued_jobs active.
    api = make_api(max_running_jobs=1, max_queued_jobs=2)
    ids = [api.post(SPEC).json()["id"] for _ in range(2)]
    with api.app.state.sessions() as s:
        for job_id in ids:
            assert crud.start_job(s, job_id) is not None
    assert api.post(SPEC).status_code == 201  # 2 running + 1 queued
    message = refused_after(api, api.post(SPEC), 3)
    assert "2 running and 1 queued" in message
    assert "max_running_jobs + max_queued_jobs = 1 + 2" in message


def test_a_submission_waits_for_a_racing_one_holding_the_users_lock(
    tmp_path: Path, database_url: str
) -> None:
    """Two submissions race for the last queue slot: the second blocks on the user's row until
    the first has inserted its job and committed, then sees it and is refused."""
    app, _ = make_app(tmp_path, database_url, max_queued_jobs=1)
    sessions = app.state.sessions
    settings = app.state.settings
    with sessions() as s:
        users.create_api_key(s, "alice")
    spec = JobSpec.model_validate(SPEC)
    second: dict[str, Any] = {}

    def submit_second() -> None:
        with sessions() as s2:
            try:
                limits.check_quotas(s2, "alice", settings)
                crud.create_job(s2, "alice", spec)
                second["outcome"] = "stored"
            except APIError as exc:
                second["outcome"] = exc.status
            second["at"] = time.monotonic()

    with sessions() as s1:
        limits.check_quotas(s1, "alice", settings)  # passes: 0 queued; holds the lock
        thread = threading.Thread(target=submit_second)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive() and not second  # blocked on the lock, not counting
        committed = time.monotonic()
        crud.create_job(s1, "alice", spec)  # commits: releases the lock
    thread.join(20)
    assert second["outcome"] == 429 and second["at"] >= committed
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(JobRow)) == 1
    app.state.engine.dispose()


def test_concurrent_submissions_never_pass_the_quota(tmp_path: Path, database_url: str) -> None:
    app, queue = make_app(tmp_path, database_url, max_queued_jobs=3)
    with app.state.sessions() as s:
        headers = {"Authorization": f"Bearer {users.create_api_key(s, 'alice')}"}
    statuses: list[int] = []
    with serve(app) as url:
        import httpx

        barrier = threading.Barrier(8)

        def submit() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                barrier.wait()
                statuses.append(http.post("/v1/jobs", json=SPEC).status_code)

        threads = [threading.Thread(target=submit) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sorted(statuses) == [201] * 3 + [429] * 5
    assert len(queue.ids) == 3
    with app.state.sessions() as s:
        assert s.scalar(select(func.count()).select_from(JobRow)) == 3


# --- request bodies ----------------------------------------------------------------------------


def _sqlite_api(tmp_path: Path, **overrides: Any) -> tuple[FastAPI, RecordingQueue, str]:
    app, queue = make_app(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", **overrides)
    with app.state.sessions() as s:
        key = users.create_api_key(s, "alice")
    return app, queue, key


def _raw_request(url: str, head: bytes, chunks: list[bytes]) -> tuple[bytes, float]:
    """Send a request head and body pieces on a socket; the answer's bytes and the seconds it
    took to arrive after the last piece was sent."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(chunk)
        sent = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
        return data, time.monotonic() - sent


def test_body_over_the_limit_is_413_before_it_is_read(tmp_path: Path) -> None:
    app, queue, key = _sqlite_api(tmp_path, max_request_bytes=4096)
    with serve(app) as url:
        # A declared length over the limit: answered at once, though no body byte was sent.
        head = (
            f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        ).encode()
        answer, seconds = _raw_request(url, head, [])
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"PayloadTooLarge"' in answer and b"max_request_bytes" in answer
        assert b"at most 4096 bytes" in answer and seconds < 2
        # Chunked, no length: refused once 4096 bytes are passed, without the final chunk.
        head = (
            f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
        answer, seconds = _raw_request(url, head, [chunk] * 5)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"exceeds 4096 bytes" in answer and seconds < 2
        # Within the limit, the same server takes the job.
        import httpx

        ok = httpx.post(f"{url}/v1/jobs", json=SPEC, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 201, ok.text
    assert len(queue.ids) == 1


def test_json_nested_deeper_than_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    app, queue, key = _sqlite_api(tmp_path, max_json_depth=8)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with TestClient(app) as client:
        for depth in (9, 200_000):  # far past the parser's recursion limit: still a 422
            body = b'{"name": ' + b"[" * depth + b"]" * depth + b"}"
            response = client.post("/v1/jobs", content=body, headers=headers)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["type"] == "LimitExceeded"
            assert "more than 8 levels deep (max_json_depth)" in error["message"]
        # Brackets inside strings are text, not nesting.
        spec = {**SPEC, "name": '[[[[[[[[[[{{{{{{{{{{ \\" ]]'}
        assert client.post("/v1/jobs", json=spec, headers=headers).status_code == 201
    assert len(queue.ids) == 1


def _nesting(value: Any) -> int:
    if isinstance(value, dict | list):
        items = value.values() if isinstance(value, dict) else value
        return 1 + max((_nesting(v) for v in items), default=0)
    return 0


def test_json_depth_matches_the_parsed_nesting() -> None:
    tricky = ['"', "\\", '\\"', "[", "]{", "}", "a\\\\", '\\\\"', "x"]
    samples: list[Any] = [
        {}, [], "text [", [[[]]], {"a": [{"b": "]]]"}]}, [tricky, {s: [s] for s in tricky}],
        {"k\\\"[": [[["\\\\"]]], "z": {"y": {"x": []}}}, [[["\\\\\\\""], "]"], 1, None],
    ]  # fmt: skip
    for sample in samples:
        assert json_depth(json.dumps(sample).encode()) == _nesting(sample), sample


# --- the worker: trust_remote_code reaches transformers ----------------------------------------

_CONFIG_PY = """
from transformers import LlamaConfig


class CustomConfig(LlamaConfig):
    model_type = "reprlab-custom"
"""

_MODELING_PY = """
from transformers import LlamaForCausalLM

from .configuration_custom import CustomConfig


class CustomForCausalLM(LlamaForCausalLM):
    config_class = CustomConfig
"""


@pytest.fixture(scope="module")
def custom_code_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama as a model that needs its own code (an unknown model_type + auto_map)."""
    import shutil

    path = tmp_path_factory.mktemp("custom") / "custom-llama"
    shutil.copytree(tiny_model_dir, path)
    (path / "configuration_custom.py").write_text(_CONFIG_PY)
    (path / "modeling_custom.py").write_text(_MODELING_PY)
    config = json.loads((path / "config.json").read_text())
    config.update(
        model_type="reprlab-custom",
        auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                  "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"},
    )  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_worker_runs_model_code_only_for_a_spec_that_trusts_it(custom_code_model: Path) -> None:
    from reprlab.worker.errors import ModelLoadError
    from reprlab.worker.models import load_model, resolve_model

    def load(trust: bool) -> Any:
        ref = ModelRef(name=str(custom_code_model), device="cpu", trust_remote_code=trust)
        resolved = resolve_model(ref, cache_dir=custom_code_model.parent,
                                 allowed_roots=[custom_code_model.parent])  # fmt: skip
        return load_model(resolved, ref)

    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load(False)
    loaded = load(True)
    assert type(loaded.model).__name__ == "CustomForCausalLM"
