"""The `reprlab` command line, run in-process with typer's CliRunner and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reprlab.client.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """The CLI reads settings once per process; in-process runs must see each test's env."""
    from reprlab.server.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("up", "down", "server", "worker", "submit", "status", "list", "cancel",
                "results", "download", "run", "models", "admin"):  # fmt: skip
        assert cmd in result.output


def test_invalid_spec_names_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "model: {name: tiny}\ndataset: {name: sentiment}\nconditions: [{name: bad, k: -1}]\n"
    )
    result = runner.invoke(app, ["submit", str(spec)])
    assert result.exit_code == 1
    assert "conditions.0.k" in result.output
    assert "Traceback" not in result.output


def test_missing_spec_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--local", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_sdk_error_is_one_message_not_a_traceback(tmp_path: Path) -> None:
    env = {"REPRLAB_URL": "http://127.0.0.1:9", "REPRLAB_API_KEY": "k"}
    result = runner.invoke(app, ["status", "abc"], env=env)
    assert result.exit_code == 1
    assert "cannot reach" in result.output and "Traceback" not in result.output


def test_admin_create_key_quiet_prints_one_key(tmp_path: Path) -> None:
    env = {**os.environ, "REPRLAB_HOME": str(tmp_path)}
    env.pop("REPRLAB_DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "reprlab.client.cli", "admin", "create-key", "alice", "--quiet"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rl_") and len(lines[0]) > 20


def test_client_imports_no_server_or_worker_code() -> None:
    code = (
        "import sys, reprlab.client, reprlab.client.cli, reprlab.client.plots\n"
        "heavy = ('reprlab.server', 'reprlab.worker', 'torch', 'fastapi', 'sqlalchemy', "
        "'celery', 'transformers', 'matplotlib')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_service_start_and_stop_a_detached_process(tmp_path: Path) -> None:
    from reprlab.client import service

    sleeper = service.Component("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    pid = service.start(tmp_path, sleeper)
    assert service.running_pid(tmp_path, "sleeper") == pid
    assert os.getsid(pid) == pid  # detached: its own session, survives the CLI
    assert service.stop(tmp_path, "sleeper", timeout=10)
    assert service.running_pid(tmp_path, "sleeper") is None
    assert not service.stop(tmp_path, "sleeper")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_down_with_nothing_started(tmp_path: Path) -> None:
    result = runner.invoke(app, ["down"], env={"REPRLAB_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert result.output.count("nothing to stop") == 3


_RESULTS = {
    "job_id": "j1",
    "model": {
        "name": "tiny",
        "resolved": "/m",
        "n_layers": 2,
        "hidden_size": 8,
        "dtype": "float32",
        "device": "cpu",
    },  # fmt: skip
    "conditions": [
        {
            "name": name,
            "paradigm": "icl",
            "n_items": 10,
            "layers": [0, 1, 2],
            "curves": [
                {
                    "metric": "id_twonn",
                    "label": "TwoNN ID",
                    "layers": [0, 1, 2],
                    "values": values,
                    "summary": {"auc": 0.5},
                }
            ],
        }  # fmt: skip
        for name, values in (("zs", [1.0, 2.0, None]), ("icl-5", [1.5, 2.5, 3.5]))
    ],
}


@pytest.fixture()
def results_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering GET /v1/jobs/j1/results (404 otherwise)."""

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/v1/jobs/j1/results":
                status, body = 200, _RESULTS
            else:
                status = 404
                body = {"error": {"type": "NotFound", "message": "no job", "hint": "list them"}}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_results_table_json_and_plots(results_server: str, tmp_path: Path) -> None:
    env = {"REPRLAB_URL": results_server, "REPRLAB_API_KEY": "k"}
    result = runner.invoke(app, ["results", "j1", "--plots", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    assert "TwoNN ID" in result.output and "icl-5" in result.output and "—" in result.output
    assert (tmp_path / "id_twonn.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(app, ["results", "j1", "--json"], env=env)
    assert json.loads(result.output)["conditions"][1]["name"] == "icl-5"
    result = runner.invoke(app, ["results", "j1", "--metric", "cka"], env=env)
    assert result.exit_code == 1 and "id_twonn" in result.output
    result = runner.invoke(app, ["results", "j2"], env=env)
    assert result.exit_code == 1 and "no job" in result.output and "list them" in result.output


def test_admin_create_key_with_an_empty_name_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "REPRLAB_HOME": str(tmp_path)}
    env.pop("REPRLAB_DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "reprlab.client.cli", "admin", "create-key", ""],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "1 to 128 letters" in proc.stderr


def test_recipes_list_and_show_print_valid_specs() -> None:
    import yaml

    from reprlab.schemas import JobSpec
    from reprlab.schemas.recipes import RECIPES

    listed = runner.invoke(app, ["recipes", "list"])
    assert listed.exit_code == 0 and all(name in listed.output for name in RECIPES)
    for name in RECIPES:
        shown = runner.invoke(app, ["recipes", "show", name])
        assert shown.exit_code == 0
        spec = JobSpec.model_validate(yaml.safe_load(shown.output))
        assert spec.name == name
    study4 = RECIPES["icl-vs-it"].job_spec()
    seeds = [c.seed for c in study4.conditions if c.name in ("icl", "it")]
    assert all(isinstance(s, list) and len(s) >= 5 for s in seeds)
    missing = runner.invoke(app, ["recipes", "show", "nope"])
    assert missing.exit_code == 1 and "icl-vs-it" in missing.output


def test_submit_accepts_a_recipe_name_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    from reprlab.client.cli import _spec_dict
    from reprlab.schemas.recipes import recipe_spec

    assert _spec_dict(Path("icl-vs-sft")) == recipe_spec("icl-vs-sft")
    result = runner.invoke(app, ["submit", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "recipe name" in result.output
