"""SFT conditions through the pipeline on the tiny model: checkpoints as results, reuse of
stored adapters, and training that resumes after its worker is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as st_load

from reprlab.schemas import JobSpec
from reprlab.server.storage import ArtifactStore
from reprlab.worker.errors import SpecError
from reprlab.worker.pipeline import NullReporter, PipelineOutput, run_pipeline


def _spec(model_dir: Path, **sft: Any) -> dict[str, Any]:
    recipe = {"paradigm": "sft", "name": "sft", "batch_size": 8, "epochs": 2,
              "learning_rate": 1e-2, "lora": {"r": 4}, "checkpoints": [0, 3], **sft}  # fmt: skip
    return {
        "model": {"name": str(model_dir), "device": "cpu"},
        "dataset": {"name": "sentiment", "n_eval": 24, "n_train": 40, "seed": 1},
        "conditions": [{"name": "zero-shot"}, recipe],
        "extraction": {"layers": [1, -1]},
        "metrics": [{"name": "id_twonn"}],
        "accuracy": True,
    }


def _run(
    spec: dict[str, Any], store: ArtifactStore, model_dir: Path, reporter: Any = None
) -> tuple[PipelineOutput, dict[str, tuple[str, str]]]:
    reporter = reporter or NullReporter()
    out = run_pipeline(JobSpec.model_validate(spec), store=store, model_cache=model_dir.parent,
                       reporter=reporter, model_roots=[model_dir.parent])  # fmt: skip
    return out, {s.name: (s.outcome, s.detail) for s in reporter.stages}


def _adapter(out: PipelineOutput, store: ArtifactStore, name: str) -> dict[str, torch.Tensor]:
    return st_load(store.get_bytes(out.artifact_keys[f"adapters/{name}.safetensors"]))


class _Recording(NullReporter):
    def __init__(self) -> None:
        super().__init__()
        self.fractions: list[tuple[str, float]] = []

    def progress(self, stage: str, fraction: float, message: str) -> None:
        self.fractions.append((stage, fraction))


def test_every_checkpoint_is_a_result_with_accuracy_and_an_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = ArtifactStore(str(tmp_path))
    reporter = _Recording()
    out, stages = _run(_spec(tiny_model_dir), store, tiny_model_dir, reporter)
    # Progress only moves forward, through training, extraction and scoring alike.
    fractions = [f for _, f in reporter.fractions]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(stage == "train:sft" for stage, _ in reporter.fractions)
    res = out.results
    assert [c.name for c in res.conditions] == ["zero-shot", "sft.step0", "sft.step3", "sft"]
    zero, step0, step3, final = res.conditions
    assert (step0.step, step3.step, final.step) == (0, 3, 10)  # 40 items / 8 x 2 epochs
    assert final.group == step3.group == "sft" and final.paradigm == "sft"
    assert (
        len(final.train_losses or []) == 10 and step3.train_losses == (final.train_losses or [])[:3]
    )
    assert all(c.behaviour is not None for c in res.conditions)
    # Step 0 is the base model (LoRA's B starts at zero): the same states as zero-shot.
    assert step0.curve("id_twonn").values == zero.curve("id_twonn").values
    assert final.curve("id_twonn").values != zero.curve("id_twonn").values
    assert {"adapters/sft.safetensors", "adapters/sft.step3.safetensors"} <= set(res.artifacts)
    assert final.adapter_artifact == "adapters/sft.safetensors"
    assert "train:sft" in stages and stages["train:sft"][0] == "done"


def test_identical_job_reuses_adapters_and_a_changed_recipe_does_not(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = ArtifactStore(str(tmp_path))
    first, _ = _run(_spec(tiny_model_dir), store, tiny_model_dir)
    again, stages = _run(_spec(tiny_model_dir), store, tiny_model_dir)
    assert stages["train:sft"][0] == "cached"
    assert all(outcome == "cached" for name, (outcome, _) in stages.items()
               if name.startswith(("extract:", "accuracy:")))  # fmt: skip
    assert not any(name.startswith("load-model") for name in stages)
    assert again.results.conditions[-1].curves == first.results.conditions[-1].curves

    # Another learning rate is another recipe: a miss, trained afresh, other weights.
    other, stages = _run(_spec(tiny_model_dir, learning_rate=2e-2), store, tiny_model_dir)
    assert stages["train:sft"][0] == "done" and stages["extract:sft"][0] == "done"
    a, b = _adapter(first, store, "sft"), _adapter(other, store, "sft")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # The zero-shot condition did not change: still reused.
    assert stages["extract:zero-shot"][0] == "cached"


def test_a_checkpoint_past_the_end_of_training_is_a_spec_error(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(SpecError, match="checkpoint step 99 but trains for 10 steps"):
        _run(_spec(tiny_model_dir, checkpoints=[99]), ArtifactStore(str(tmp_path)), tiny_model_dir)


def test_full_fine_tuning_runs_through_the_pipeline(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model_dir, method="full", learning_rate=1e-3, checkpoints=[])
    out, _ = _run(spec, ArtifactStore(str(tmp_path)), tiny_model_dir)
    final = out.results.condition("sft")
    losses = final.train_losses or []
    assert final.step == 10 and losses[-1] < losses[0]


_KILLABLE = """
import sys, json
from pathlib import Path
from reprlab.schemas import JobSpec
from reprlab.server.storage import ArtifactStore
from reprlab.worker.pipeline import NullReporter, run_pipeline
spec, store, root = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
run_pipeline(JobSpec.model_validate(spec), store=ArtifactStore(store), model_cache=root,
             reporter=NullReporter(), model_roots=[root])
"""


def test_training_killed_mid_way_resumes_from_the_last_saved_state(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL the process mid-training; the next run resumes and ends with the same weights."""
    # 40 items / batch 2 x 10 epochs = 200 steps, a resumable state every 10.
    spec = _spec(tiny_model_dir, batch_size=2, epochs=10, checkpoints=[], save_every=10)
    spec["accuracy"] = False
    killed = ArtifactStore(str(tmp_path / "killed"))
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, json.dumps(spec), killed.url, str(tiny_model_dir.parent)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    states = tmp_path / "killed" / "train-state"
    deadline = time.monotonic() + 120
    while not any(states.glob("*.safetensors")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the training process ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    resumed, stages = _run(spec, killed, tiny_model_dir)
    outcome, detail = stages["train:sft"]
    assert outcome == "done" and detail.startswith("resumed at step "), detail
    assert int(detail.split()[3].rstrip(";")) >= 10

    fresh_store = ArtifactStore(str(tmp_path / "fresh"))
    straight, stages = _run(spec, fresh_store, tiny_model_dir)
    assert not stages["train:sft"][1].startswith("resumed")
    a, b = _adapter(resumed, killed, "sft"), _adapter(straight, fresh_store, "sft")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert resumed.results.condition("sft").train_losses == pytest.approx(
        straight.results.condition("sft").train_losses, abs=1e-5
    )
