"""SDK transport and job helpers against a real HTTP server on 127.0.0.1 (canned answers)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save

from reprlab.client import (
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    InternalServerError,
    JobCancelledError,
    JobFailedError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ReprlabError,
    UnprocessableEntityError,
)

Reply = tuple[int, dict[str, str], bytes]
Handler = Callable[[str, str, bytes], Reply]


class _Server:
    """A threaded HTTP server whose answers come from a swappable Python function."""

    def __init__(self, port: int = 0) -> None:
        self.calls: list[tuple[str, str, bytes, dict[str, str]]] = []
        self.handler: Handler = lambda m, p, b: (404, {}, b"")
        outer = self

        class H(BaseHTTPRequestHandler):
            def _do(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.calls.append((self.command, self.path, body, dict(self.headers)))
                status, headers, payload = outer.handler(self.command, self.path, body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _do  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.httpd.shutdown()


@pytest.fixture
def client(server: _Server) -> Iterator[Client]:
    server.calls.clear()
    with Client(server.url, "rl_test", timeout=5, max_retries=3) as c:
        c._transport.backoff = 0.01
        yield c


def _json(status: int, obj: Any, **headers: str) -> Reply:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(obj).encode()


def _error(status: int, type_: str = "Oops", msg: str = "it broke", hint: str | None = "do X"):
    return _json(status, {"error": {"type": type_, "message": msg, "hint": hint}})


SPEC = {"model": {"name": "tiny"}, "dataset": {"name": "sentiment"}, "conditions": [{"name": "zs"}]}


def _job(status: str = "running", stage: str = "extract", error: Any = None) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "id": "j1", "owner": "alice", "status": status, "created_at": now,
        "progress": {"stage": stage, "fraction": 0.5, "message": "m"}, "error": error,
        "spec": SPEC,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, BadRequestError), (401, AuthenticationError), (403, PermissionDeniedError),
     (404, NotFoundError), (409, ConflictError), (422, UnprocessableEntityError),
     (429, RateLimitError), (500, InternalServerError), (503, InternalServerError)],
)  # fmt: skip
def test_error_mapping(server: _Server, client: Client, status: int, cls: type) -> None:
    server.handler = lambda m, p, b: _error(status, msg="the message", hint="the hint")
    with pytest.raises(cls) as exc:
        client.jobs.get("j1")
    assert exc.value.status_code == status
    assert "the message" in str(exc.value) and "the hint" in str(exc.value)
    assert server.calls[0][3]["Authorization"] == "Bearer rl_test"


def test_retry_on_503_then_success(server: _Server, client: Client) -> None:
    replies = [_error(503), _error(502), _json(200, _job())]
    server.handler = lambda m, p, b: replies.pop(0)
    assert client.jobs.get("j1").id == "j1"
    assert len(server.calls) == 3


def test_retry_after_is_honoured(server: _Server, client: Client) -> None:
    replies = [_json(429, {"error": {"type": "Rate", "message": "slow", "hint": None}},
                     **{"Retry-After": "1"}), _json(200, _job())]  # fmt: skip
    server.handler = lambda m, p, b: replies.pop(0)
    start = time.monotonic()
    client.jobs.get("j1")
    assert time.monotonic() - start >= 0.95


def test_job_creation_is_not_retried_on_503(server: _Server, client: Client) -> None:
    server.handler = lambda m, p, b: _error(503)
    with pytest.raises(InternalServerError):
        client.jobs.create({"model": {"name": "x"}})
    assert len(server.calls) == 1


def test_connection_error_is_clear(tmp_path: Path) -> None:
    with Client("http://127.0.0.1:9", "k", max_retries=0) as c, pytest.raises(ReprlabError) as e:
        c.jobs.get("j1")
    assert "reprlab up" in str(e.value)


def test_missing_key_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPRLAB_API_KEY", raising=False)
    monkeypatch.setenv("REPRLAB_HOME", str(tmp_path))
    with pytest.raises(ReprlabError, match="create-key"):
        Client("http://127.0.0.1:9")
    (tmp_path / "api-key").write_text("rl_file\n")
    with Client("http://127.0.0.1:9") as c:
        assert c._transport._http.headers["Authorization"] == "Bearer rl_file"


def test_wait_survives_outage_and_returns(server: _Server, client: Client) -> None:
    replies = [_json(200, _job()), _error(503), _error(503), _error(503), _error(503),
               _error(502), _json(200, _job("succeeded", "done"))]  # fmt: skip
    server.handler = lambda m, p, b: replies.pop(0)
    job = client.jobs.wait("j1", poll_interval=0.01, progress=True, timeout=30)
    assert job.status.value == "succeeded"


def test_wait_raises_failed_and_cancelled(server: _Server, client: Client) -> None:
    err = {"type": "ModelLoadError", "message": "no such model", "hint": "use smollm2"}
    server.handler = lambda m, p, b: _json(200, _job("failed", error=err))
    with pytest.raises(JobFailedError) as exc:
        client.jobs.wait("j1", poll_interval=0.01, progress=False)
    assert all(w in str(exc.value) for w in ("ModelLoadError", "no such model", "use smollm2"))
    server.handler = lambda m, p, b: _json(200, _job("cancelled"))
    with pytest.raises(JobCancelledError):
        client.jobs.wait("j1", poll_interval=0.01, progress=False)


def test_wait_timeout(server: _Server, client: Client) -> None:
    server.handler = lambda m, p, b: _json(200, _job())
    with pytest.raises(TimeoutError):
        client.jobs.wait("j1", poll_interval=0.01, timeout=0.2, progress=False)


def test_download_is_streamed_and_atomic(server: _Server, client: Client, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4000
    server.handler = lambda m, p, b: (200, {"Content-Type": "image/png"}, payload)
    dest = client.jobs.download_artifact("j1", "plots/id_twonn.png", tmp_path / "d" / "p.png")
    assert dest.read_bytes() == payload
    assert server.calls[-1][1] == "/v1/jobs/j1/artifacts/plots/id_twonn.png"
    umask = os.umask(0o022)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    server.handler = lambda m, p, b: _error(404, msg="no artifact")
    with pytest.raises(NotFoundError):
        client.jobs.download_artifact("j1", "nope.png", tmp_path / "d" / "p.png")
    assert dest.read_bytes() == payload  # untouched
    assert sorted(x.name for x in (tmp_path / "d").iterdir()) == ["p.png"]  # no temp files


def test_activations_parse_safetensors(server: _Server, client: Client) -> None:
    rng = np.random.default_rng(0)
    tensors = {f"layer.{i}": rng.normal(size=(5, 8)).astype(np.float32) for i in (0, 2, 10)}
    tensors["n_tokens"] = np.arange(5, dtype=np.int64)
    data = save(tensors, metadata={"layers": "[0, 2, 10]"})
    server.handler = lambda m, p, b: (200, {}, data)
    acts = client.jobs.activations("j1", "icl-2")
    assert list(acts) == [0, 2, 10]
    np.testing.assert_array_equal(acts[10], tensors["layer.10"])
    assert server.calls[-1][1] == "/v1/jobs/j1/artifacts/activations/icl-2.safetensors"


def test_jsonl_dataset_is_inlined_relative_to_spec(
    server: _Server, client: Client, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    lines = [{"input": f"q{i}", "output": "a", "subject": "s"} for i in range(3)]
    (tmp_path / "data" / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    spec = tmp_path / "spec.yaml"
    spec.write_text("model: {name: tiny}\ndataset: {source: jsonl, path: data/d.jsonl}\n")
    server.handler = lambda m, p, b: _json(201, _job("queued"))
    client.jobs.create(spec)
    sent = json.loads(server.calls[-1][2])
    assert sent["dataset"]["source"] == "inline"
    assert [it["input"] for it in sent["dataset"]["items"]] == ["q0", "q1", "q2"]
    assert "path" not in sent["dataset"]
    (tmp_path / "data" / "d.jsonl").write_text('{"input": "x"}\n')
    with pytest.raises(ValueError, match="line 1"):
        client.jobs.create(spec)


def test_cancel_is_retried_but_returns_the_job(server: _Server, client: Client) -> None:
    replies = [_error(503), _json(200, _job("cancelled"))]
    server.handler = lambda m, p, b: replies.pop(0)
    assert client.jobs.cancel("j1").status.value == "cancelled"
    assert [c[:2] for c in server.calls] == [("POST", "/v1/jobs/j1/cancel")] * 2


def test_jobspec_object_is_sent_whole_with_local_jsonl_inlined(
    server: _Server, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprlab.client import JobSpec

    monkeypatch.chdir(tmp_path)
    Path("d.jsonl").write_text('{"input": "a", "output": "b", "split": "train"}\n'
                               '{"input": "c", "output": "d", "split": "eval"}\n')  # fmt: skip
    spec = JobSpec.model_validate(
        {**SPEC, "dataset": {"source": "jsonl", "path": "d.jsonl", "n_eval": 1, "n_train": 1}}
    )
    server.handler = lambda m, p, b: _json(201, _job("queued"))
    client.jobs.create(spec)
    sent = json.loads(server.calls[-1][2])
    assert sent["dataset"]["source"] == "inline" and sent["dataset"]["splits"] == ["train", "eval"]
    assert sent["dataset"]["n_eval"] == 1
    assert JobSpec.model_validate(sent).dataset.source == "inline"  # still a valid spec
    # A path that does not exist here is left for the worker's data roots.
    client.jobs.create({**SPEC, "dataset": {"source": "jsonl", "path": "/srv/data/x.jsonl"}})
    assert json.loads(server.calls[-1][2])["dataset"]["path"] == "/srv/data/x.jsonl"


def test_default_url_follows_local_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprlab.client._config import default_base_url

    for var in ("REPRLAB_URL", "REPRLAB_HOST", "REPRLAB_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert default_base_url() == "http://127.0.0.1:8000"
    monkeypatch.setenv("REPRLAB_PORT", "9001")
    monkeypatch.setenv("REPRLAB_HOST", "0.0.0.0")
    assert default_base_url() == "http://127.0.0.1:9001"
    monkeypatch.setenv("REPRLAB_URL", "https://lab.example/")
    assert default_base_url() == "https://lab.example"


def test_wait_survives_a_server_restart(tmp_path: Path) -> None:
    """The server goes away (connection refused) and comes back on the same port."""
    first = _Server()
    port = first.httpd.server_address[1]
    first.handler = lambda m, p, b: _json(200, _job())
    restarted: list[_Server] = []

    def restart() -> None:
        time.sleep(0.3)
        first.httpd.shutdown()
        first.httpd.server_close()
        time.sleep(1.0)  # down: connection refused
        second = _Server(port)
        second.handler = lambda m, p, b: _json(200, _job("succeeded", "done"))
        restarted.append(second)

    threading.Thread(target=restart, daemon=True).start()
    with Client(first.url, "k", max_retries=1) as c:
        c._transport.backoff = 0.01
        job = c.jobs.wait("j1", poll_interval=0.05, progress=False, timeout=20)
    assert job.status.value == "succeeded" and restarted and restarted[0].calls
    restarted[0].httpd.shutdown()
