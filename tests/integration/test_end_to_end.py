"""The whole service on a tiny random Llama: SDK -> uvicorn -> Redis -> Celery worker -> SDK."""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import Service
from typer.testing import CliRunner

from reprlab.client import Client
from reprlab.client._exceptions import (
    AuthenticationError,
    JobCancelledError,
    JobFailedError,
    UnprocessableEntityError,
)
from reprlab.client.cli import app as cli_app
from reprlab.schemas import JobStatus

pytestmark = pytest.mark.integration


def _spec(model_dir: Path, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "tiny e2e",
        "model": {"name": str(model_dir), "device": "cpu"},
        "dataset": {"name": "sentiment", "n_eval": 80, "n_train": 20, "seed": 1},
        "conditions": [{"name": "zero-shot", "k": 0}, {"name": "icl-2", "k": 2}],
        "extraction": {"layers": "all", "batch_size": 16},
        "metrics": [{"name": "id_twonn"}, {"name": "id_gride", "range_max": 16, "report_n2": 8}],
    }
    spec.update(overrides)
    return spec


@pytest.fixture()
def client(service: Service) -> Client:
    return Client(base_url=service.url, api_key=service.api_key, timeout=10)


def test_icl_job_end_to_end(client: Client, service: Service, tiny_model_dir: Path) -> None:
    job = client.jobs.create(_spec(tiny_model_dir, accuracy=True))
    assert job.status == JobStatus.QUEUED
    done = client.jobs.wait(job.id, timeout=180, progress=False)
    assert done.status == JobStatus.SUCCEEDED
    assert done.progress.fraction == 1.0
    assert {s.name for s in done.stages} >= {"data", "extract:zero-shot", "extract:icl-2"}

    results = client.jobs.results(job.id)
    assert [c.name for c in results.conditions] == ["zero-shot", "icl-2"]
    assert results.model.n_layers == 4
    for cond in results.conditions:
        assert cond.layers == [0, 1, 2, 3, 4]
        twonn = cond.curve("id_twonn")
        assert twonn.label.startswith("TwoNN")
        # Every prompt ends at the answer position, the same "\n" token: at the embedding
        # layer all states coincide, so TwoNN is undefined there (the study's layer 0 too).
        assert twonn.values[0] is None and any(w.startswith("layer 0") for w in cond.warnings)
        assert cond.duplicates[0] == 79  # 80 queries, one distinct state
        assert all(v is not None and math.isfinite(v) and v > 0 for v in twonn.values[1:])
        assert twonn.summary["auc"] is not None  # layers scaled to [0, 1], layer 0 excluded
        gride = cond.curve("id_gride")
        assert gride.params == {"n1": 4, "n2": 8}
        assert cond.behaviour is not None and cond.behaviour.n_items == 80
        assert cond.behaviour.options == ["negative", "positive"]
    assert {s.name for s in done.stages} >= {"accuracy:zero-shot", "accuracy:icl-2"}
    # ICL prompts are longer than zero-shot ones.
    zs, icl = results.conditions
    assert icl.prompt_tokens_mean is not None and zs.prompt_tokens_mean is not None
    assert icl.prompt_tokens_mean > 2 * zs.prompt_tokens_mean

    acts = client.jobs.activations(job.id, "icl-2")
    assert sorted(acts) == [0, 1, 2, 3, 4]
    assert acts[4].shape == (80, 64) and acts[4].dtype == np.float32
    plot = client.jobs.download_artifact(job.id, "plots/id_twonn.png", service.home / "p.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Every item's exact prompt, demos and tokens read, matching the results' records.
    prompts = client.jobs.prompts(job.id, "icl-2")
    assert prompts.condition == "icl-2" and prompts.prompt_format["suffix"] == "\n"
    assert [p.demos for p in prompts.prompts] == icl.demos
    assert [p.tokens_read for p in prompts.prompts] == icl.tokens_read
    assert [hashlib.sha256(p.text.encode()).hexdigest()[:16] for p in prompts.prompts] == (
        icl.prompt_hashes
    )
    assert all(p.text.endswith("\n") and p.tokens_read == [p.n_tokens - 1, p.n_tokens]
               for p in prompts.prompts)  # fmt: skip
    env = {"REPRLAB_URL": service.url, "REPRLAB_API_KEY": service.api_key}
    shown = CliRunner().invoke(cli_app, ["results", job.id, "--prompts", "2"], env=env)
    assert shown.exit_code == 0, shown.output
    assert repr(prompts.prompts[1].text) in shown.output and "zero-shot" in shown.output


def test_identical_job_reuses_activations(client: Client, tiny_model_dir: Path) -> None:
    spec = _spec(tiny_model_dir, conditions=[{"name": "icl-3", "k": 3, "seed": 5}])
    first = client.jobs.wait(client.jobs.create(spec).id, timeout=180, progress=False)
    second = client.jobs.wait(client.jobs.create(spec).id, timeout=180, progress=False)
    outcome = {s.name: s.outcome for s in second.stages}
    assert {s.name: s.outcome for s in first.stages}["extract:icl-3"] == "done"
    assert outcome["extract:icl-3"] == "cached"
    assert "load-model" not in outcome  # a fully cached job never loads the model
    a, b = client.jobs.results(first.id), client.jobs.results(second.id)
    assert a.conditions[0].curves == b.conditions[0].curves


def test_missing_api_key_is_401(service: Service) -> None:
    with pytest.raises(AuthenticationError) as err:
        Client(base_url=service.url, api_key="rl_not-a-key").jobs.list()
    assert "create-key" in str(err.value)
    assert httpx.get(f"{service.url}/v1/jobs").status_code == 401


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"conditions": [{"name": "bad", "k": -1}]}, "conditions.0.k"),
        ({"conditions": []}, "conditions"),
        ({"dataset": {"name": "sentiment", "bogus": 1}}, "bogus"),
        ({"metrics": [{"name": "id_nope"}]}, "metrics.0"),
        ({"dataset": {"source": "inline", "items": []}}, "items"),
    ],
)
def test_malformed_spec_is_422_naming_the_field(
    client: Client, tiny_model_dir: Path, patch: dict[str, Any], field: str
) -> None:
    with pytest.raises(UnprocessableEntityError) as err:
        client.jobs.create(_spec(tiny_model_dir, **patch))
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("patch", "error_type", "words"),
    [
        ({"model": {"name": "no-such-model-anywhere"}}, "ModelLoadError", "smollm2"),
        ({"conditions": [{"name": "too-many", "k": 50}]}, "SpecError", "n_train"),
    ],
)
def test_bad_job_fails_with_clear_error_and_service_keeps_serving(
    client: Client, tiny_model_dir: Path, patch: dict[str, Any], error_type: str, words: str
) -> None:
    job = client.jobs.create(_spec(tiny_model_dir, **patch))
    with pytest.raises(JobFailedError) as err:
        client.jobs.wait(job.id, timeout=120, progress=False)
    assert err.value.job.error is not None
    assert err.value.job.error.type == error_type
    assert words in f"{err.value.job.error.message} {err.value.job.error.hint}"
    # The worker and the server still take and finish work.
    ok = client.jobs.create(_spec(tiny_model_dir, conditions=[{"name": "zs", "k": 0}]))
    assert client.jobs.wait(ok.id, timeout=120, progress=False).status == JobStatus.SUCCEEDED


def test_cancel_running_job_stops_it(client: Client, tiny_model_dir: Path) -> None:
    spec = _spec(
        tiny_model_dir,
        dataset={"name": "sentiment", "n_eval": 3000, "n_train": 50, "seed": 7},
        conditions=[{"name": "icl-8", "k": 8, "seed": 3}],
        extraction={"layers": "all", "batch_size": 4},
    )
    job = client.jobs.create(spec)
    for _ in range(300):
        if client.jobs.get(job.id).status == JobStatus.RUNNING:
            break
        time.sleep(0.1)
    client.jobs.cancel(job.id)
    with pytest.raises(JobCancelledError):
        client.jobs.wait(job.id, timeout=60, progress=False)
    assert client.jobs.get(job.id).status == JobStatus.CANCELLED


def test_sft_job_with_checkpoints_adapters_and_reuse(
    client: Client, service: Service, tiny_model_dir: Path
) -> None:
    """ICL and LoRA SFT side by side through the service; the identical job reuses the adapters."""
    from safetensors.numpy import load_file

    spec = _spec(
        tiny_model_dir,
        conditions=[
            {"name": "zero-shot"},
            {
                "paradigm": "sft",
                "name": "lora",
                "batch_size": 5,
                "learning_rate": 1e-2,
                "lora": {"r": 4},
                "checkpoints": [2],
            },
        ],  # fmt: skip
        accuracy=True,
    )
    first = client.jobs.wait(client.jobs.create(spec).id, timeout=300, progress=False)
    assert first.status == JobStatus.SUCCEEDED, first.error
    results = client.jobs.results(first.id)
    assert [c.name for c in results.conditions] == ["zero-shot", "lora.step2", "lora"]
    final = results.condition("lora")
    assert final.step == 4 and final.behaviour is not None and len(final.train_losses or []) == 4
    path = client.jobs.download_artifact(
        first.id, "adapters/lora.step2.safetensors", service.home / "a.safetensors"
    )
    adapter = load_file(str(path))
    assert adapter and all("lora_" in name for name in adapter)
    _downloaded_adapter_reproduces_the_analysed_states(client, first.id, spec, tiny_model_dir,
                                                       service.home / "adapter")  # fmt: skip

    second = client.jobs.wait(client.jobs.create(spec).id, timeout=300, progress=False)
    outcome = {s.name: s.outcome for s in second.stages}
    assert outcome["train:lora"] == "cached" and outcome["extract:lora.step2"] == "cached"
    assert not any(name.startswith("load-model") for name in outcome)
    assert client.jobs.results(second.id).condition("lora").curves == final.curves


def _downloaded_adapter_reproduces_the_analysed_states(
    client: Client, job_id: str, spec: dict[str, Any], model_dir: Path, dest: Path
) -> None:
    """`PeftModel.from_pretrained` on the downloaded directory gives the worker's states."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reprlab.schemas import ExtractionSpec, ICLCondition, JobSpec, PromptSpec
    from reprlab.worker.data import load_dataset
    from reprlab.worker.extract import extract_activations
    from reprlab.worker.prompts import build_prompts

    folder = client.jobs.download_adapter(job_id, "lora", dest)
    assert {p.name for p in folder.iterdir()} >= {
        "adapter_model.safetensors",
        "adapter_config.json",
    }
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    dataset = load_dataset(JobSpec.model_validate(spec).dataset)
    prompts = [p.text for p in build_prompts(dataset, ICLCondition(name="z"), PromptSpec())]
    ours = extract_activations(model, tok, prompts, ExtractionSpec(layers=[-1]))
    served = client.jobs.activations(job_id, "lora")
    np.testing.assert_allclose(ours.states[:, 0, :].numpy(), served[max(served)], atol=1e-4)
