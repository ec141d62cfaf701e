"""Dataset uploads end to end: the SDK and the CLI against a real uvicorn server (real SQLite
and PostgreSQL), the checks at job submission, and a worker reading the uploaded bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi import FastAPI
from live_server import serve
from recording_queue import RecordingQueue
from typer.testing import CliRunner

from reprlab.client import APIStatusError, Client, NotFoundError, UnprocessableEntityError
from reprlab.client.cli import app as cli_app
from reprlab.schemas.specs import JobSpec
from reprlab.schemas.users import Role
from reprlab.server import users
from reprlab.server.app import create_app
from reprlab.server.config import Settings
from reprlab.server.storage import ArtifactStore
from reprlab.worker.data import load_dataset
from reprlab.worker.pipeline import NullReporter, run_pipeline

MAX_UPLOAD = 64 * 1024
QUESTION = " \nQuestion: Was that sentence positive or negative? Answer:"


@dataclass
class Service:
    url: str
    app: FastAPI
    queue: RecordingQueue
    keys: dict[str, str]
    data: Path

    def client(self, who: str = "alice") -> Client:
        return Client(self.url, self.keys[who], timeout=10, max_retries=0)

    @property
    def store(self) -> ArtifactStore:
        store: ArtifactStore = self.app.state.store
        return store

    def submit(self, dataset: dict[str, Any], who: str = "alice") -> httpx.Response:
        spec = {"model": {"name": "smollm2-135m-instruct", "device": "cpu"}, "dataset": dataset,
                "conditions": [{"name": "zero-shot"}]}  # fmt: skip
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.post(f"{self.url}/v1/jobs", json=spec, headers=headers, timeout=10)


def _start(tmp_path: Path, database_url: str) -> Iterator[Service]:
    data = tmp_path / "data"
    data.mkdir()
    settings = Settings(
        home=tmp_path / "home", database_url=database_url, broker_url="redis://127.0.0.1:1/0",
        artifact_url=f"file://{tmp_path / 'artifacts'}", data_roots=[data],
        max_upload_bytes=MAX_UPLOAD, rate_limit_per_s=0,
    )  # fmt: skip
    queue = RecordingQueue()
    app = create_app(settings, queue=queue)
    with app.state.sessions() as s:
        keys = {name: users.create_api_key(s, name) for name in ("alice", "bob")}
        keys["root"] = users.create_api_key(s, "root", role=Role.ADMIN)
    with serve(app) as url:
        yield Service(url, app, queue, keys, data)
    app.state.engine.dispose()


@pytest.fixture()
def service(tmp_path: Path, database_url: str) -> Iterator[Service]:
    """The API on SQLite and on PostgreSQL, served by uvicorn on 127.0.0.1."""
    yield from _start(tmp_path, database_url)


@pytest.fixture()
def sqlite_service(tmp_path: Path) -> Iterator[Service]:
    yield from _start(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")


def _sst2(path: Path, n_train: int = 8, n_eval: int = 6) -> Path:
    """Janapati & Ji's JSON: a repeated input in validation, one input in both splits."""

    def item(sentence: str, word: str) -> dict[str, str]:
        text = sentence + QUESTION
        return {"input": text, "output": word, "combined": f"{text}\n{word}"}

    words = ["positive", "negative"]
    train = [item(f"Train review number {i}.", words[i % 2]) for i in range(n_train - 1)]
    train.append(item("Seen in both splits.", "positive"))
    validation = [item(f"Held-out review {i}.", words[i % 2]) for i in range(n_eval - 2)]
    validation += [item("Seen in both splits.", "positive"), validation[0]]
    path.write_text(json.dumps({"train": train, "validation": validation}))
    return path


def test_upload_get_and_ownership(service: Service, tmp_path: Path) -> None:
    path = _sst2(tmp_path / "sst2.json")
    with service.client() as alice:
        record = alice.datasets.upload(path)
        assert (record.owner, record.filename, record.format) == ("alice", "sst2.json", "json")
        assert record.size == path.stat().st_size
        assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert alice.datasets.get(record.id) == record
        again = alice.datasets.upload(path)  # a retry stores nothing twice
        assert again.id == record.id
    with service.client("bob") as bob, pytest.raises(NotFoundError) as exc:
        bob.datasets.get(record.id)
    assert "reprlab datasets upload" in str(exc.value)
    with service.client("root") as root:
        assert root.datasets.get(record.id).owner == "alice"  # admins see every upload
    stored = [p.name for p in (tmp_path / "artifacts" / "datasets").iterdir() if p.is_file()]
    assert stored == [f"{record.sha256}.json"]


def test_a_job_names_an_upload_of_its_owner(service: Service, tmp_path: Path) -> None:
    with service.client() as alice:
        record = alice.datasets.upload(_sst2(tmp_path / "sst2.json"))
    dataset = {"source": "file", "upload": record.id, "n_eval": 6, "n_train": 8,
               "splits": {"train": "train", "eval": "validation"}}  # fmt: skip
    created = service.submit(dataset)
    assert created.status_code == 201, created.text
    for who, upload in (("bob", record.id), ("alice", "0" * 32)):
        refused = service.submit({**dataset, "upload": upload}, who)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert f"dataset.upload: no uploaded dataset {upload!r} of yours" in error["message"]
        assert "reprlab datasets upload" in error["hint"]
    assert len(service.queue.ids) == 1
    # The worker reads the uploaded bytes from the artifact store: every item, in file order.
    spec = JobSpec.model_validate(created.json()["spec"])
    d = load_dataset(spec.dataset, data_roots=[service.data], store=service.store)
    items = json.loads((tmp_path / "sst2.json").read_text())
    assert [e.input for e in d.eval] == [v["input"] for v in items["validation"]]
    assert [e.input for e in d.train] == [t["input"] for t in items["train"]]


def test_refused_uploads_are_clear_and_store_nothing(service: Service, tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    big.write_text('{"input": "a", "output": "b"}\n' * (MAX_UPLOAD // 30 + 10))
    odd = tmp_path / "data.xlsx"
    odd.write_bytes(b"PK\x03\x04")
    with service.client() as alice:
        with pytest.raises(APIStatusError) as exc:
            alice.datasets.upload(big)
        assert exc.value.status_code == 413 and "max_upload_bytes" in str(exc.value)
        assert f"at most {MAX_UPLOAD} bytes" in str(exc.value)
        with pytest.raises(APIStatusError) as exc:
            alice.datasets.upload(odd)
        assert exc.value.status_code == 415 and "cannot tell the format of 'data.xlsx'" in str(
            exc.value)  # fmt: skip
        for name, content, words in [
            ("empty.csv", b"", "the upload is empty"),
            ("latin.csv", "caf\xe9".encode("latin-1"), "must be UTF-8 text"),
            ("fake.parquet", b"input,output\n", "not a Parquet file"),
        ]:
            (tmp_path / name).write_bytes(content)
            with pytest.raises(UnprocessableEntityError, match=words):
                alice.datasets.upload(tmp_path / name)
    assert not (tmp_path / "artifacts" / "datasets").exists()


def test_format_override_and_parquet(sqlite_service: Service, tmp_path: Path) -> None:
    text = tmp_path / "rows.txt"
    text.write_text('{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n')
    frame = pd.DataFrame({"sentence": ["x", "y", "z"], "label": [0, 1, 1]})
    frame.to_parquet(tmp_path / "sst2.parquet")
    with sqlite_service.client() as alice:
        as_jsonl = alice.datasets.upload(text, format="jsonl")
        parquet = alice.datasets.upload(tmp_path / "sst2.parquet")
    assert (as_jsonl.format, parquet.format) == ("jsonl", "parquet")
    spec = JobSpec.model_validate({
        "model": {"name": "x"}, "conditions": [{"name": "zs"}],
        "dataset": {"source": "file", "upload": parquet.id, "n_eval": 2, "n_train": 1,
                    "fields": {"input": "sentence", "output": "label"},
                    "label_names": {0: "negative", 1: "positive"}},
    })  # fmt: skip
    d = load_dataset(spec.dataset, store=sqlite_service.store)
    assert [(e.input, e.output) for e in d.eval + d.train] == [
        ("x", "negative"), ("y", "positive"), ("z", "positive")]  # fmt: skip


def test_file_paths_are_checked_at_submission(sqlite_service: Service, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("input,output\na,b\n")
    for path in (str(outside), "../elsewhere.csv"):
        refused = sqlite_service.submit({"source": "file", "path": path})
        assert refused.status_code == 403, refused.text
        assert "reprlab datasets upload" in refused.json()["error"]["hint"]
    unknown = sqlite_service.submit({"source": "file", "path": "rows.txt"})
    assert unknown.status_code == 422 and "cannot tell the format" in unknown.text
    hf_outside = sqlite_service.submit({"source": "hf", "path": str(tmp_path)})
    assert hf_outside.status_code == 403, hf_outside.text
    (sqlite_service.data / "ok.csv").write_text("input,output\na,b\n")
    ok = sqlite_service.submit({"source": "file", "path": "ok.csv", "n_eval": 1, "n_train": 0})
    assert ok.status_code == 201, ok.text
    assert len(sqlite_service.queue.ids) == 1


def test_cli_upload_prints_the_id(sqlite_service: Service, tmp_path: Path) -> None:
    path = _sst2(tmp_path / "sst2.json")
    env = {"REPRLAB_URL": sqlite_service.url, "REPRLAB_API_KEY": sqlite_service.keys["alice"]}
    result = CliRunner().invoke(cli_app, ["datasets", "upload", str(path)], env=env)
    assert result.exit_code == 0, result.output
    upload_id = result.stdout.strip().splitlines()[-1]
    with sqlite_service.client() as alice:
        assert alice.datasets.get(upload_id).filename == "sst2.json"
    shown = CliRunner().invoke(cli_app, ["datasets", "show", upload_id], env=env)
    assert shown.exit_code == 0 and '"owner": "alice"' in shown.stdout
    missing = CliRunner().invoke(cli_app, ["datasets", "upload", str(tmp_path / "no.csv")],
                                 env=env)  # fmt: skip
    assert missing.exit_code == 1 and "is not a file" in " ".join(missing.output.split())


def test_the_pipeline_runs_on_an_uploaded_file(
    sqlite_service: Service, tmp_path: Path, tiny_model_dir: Path
) -> None:
    with sqlite_service.client() as alice:
        record = alice.datasets.upload(_sst2(tmp_path / "sst2.json", n_train=8, n_eval=12))
    spec = JobSpec.model_validate({
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "dataset": {"source": "file", "upload": record.id, "n_eval": 12, "n_train": 8,
                    "splits": {"train": "train", "eval": "validation"}},
        "conditions": [{"name": "icl", "k": 2}], "extraction": {"layers": [1, -1]},
        "metrics": [{"name": "id_twonn"}],
    })  # fmt: skip
    out = run_pipeline(spec, store=sqlite_service.store, model_cache=tiny_model_dir.parent,
                       reporter=NullReporter(), model_roots=[tiny_model_dir.parent])  # fmt: skip
    (cond,) = out.results.conditions
    assert cond.n_items == 12 and len(cond.demos) == 12
    assert all(0 <= j < 8 for demos in cond.demos for j in demos)
