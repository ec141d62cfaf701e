"""The real model, in-process: zero-shot vs 5-shot and LoRA SFT on SmolLM2-135M-Instruct."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from reprlab.schemas import JobSpec
from reprlab.server.storage import ArtifactStore
from reprlab.worker.pipeline import NullReporter, run_pipeline

pytestmark = pytest.mark.slow


def test_zero_shot_vs_five_shot_finite_id_at_every_layer(
    smollm2_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    spec = JobSpec.model_validate(
        {
            "model": {"name": "smollm2-135m-instruct", "device": "cpu"},
            "dataset": {"name": "sentiment", "n_eval": 150, "n_train": 40, "seed": 0},
            "conditions": [{"name": "zero-shot", "k": 0}, {"name": "icl-5", "k": 5}],
            "extraction": {"batch_size": 16},
            "metrics": [{"name": "id_twonn"}, {"name": "id_gride", "range_max": 32}],
        }
    )
    reporter = NullReporter()
    out = run_pipeline(
        spec, store=ArtifactStore(str(tmp_path)), model_cache=model_cache, reporter=reporter
    )
    results = out.results
    assert results.model.n_layers == 30 and results.model.hidden_size == 576
    for cond in results.conditions:
        assert cond.layers == list(range(31))
        for metric in ("id_twonn", "id_gride"):
            values = cond.curve(metric).values
            assert len(values) == 31
            # Layer 0 is the embedding of the answer-position "\n" every prompt ends in.
            assert values[0] is None and cond.duplicates[0] == 149
            assert all(v is not None and math.isfinite(v) and 0 < v < 576 for v in values[1:])
        assert cond.curve("id_twonn").summary["auc"] is not None
    # Same data, same model: the 5-shot prompts differ only by the demonstrations.
    zs, icl = results.conditions
    assert icl.prompt_tokens_mean is not None and zs.prompt_tokens_mean is not None
    assert icl.prompt_tokens_mean > 3 * zs.prompt_tokens_mean
    assert {s.name for s in reporter.stages} >= {"extract:zero-shot", "extract:icl-5", "report"}


def test_lora_sft_beats_zero_shot_and_a_rerun_is_all_cached(
    smollm2_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """The real model learns the built-in sentiment task from 96 items in 12 LoRA steps."""
    spec = JobSpec.model_validate(
        {
            "model": {"name": "smollm2-135m-instruct", "device": "cpu"},
            "dataset": {"name": "sentiment", "n_eval": 64, "n_train": 96, "seed": 0},
            "conditions": [
                {"name": "zero-shot"},
                {
                    "paradigm": "sft",
                    "name": "lora",
                    "learning_rate": 2e-3,
                    "epochs": 2,
                    "checkpoints": [6],
                },
            ],  # fmt: skip
            "extraction": {"batch_size": 16},
            "metrics": [{"name": "id_twonn"}],
            "accuracy": True,
        }
    )
    store = ArtifactStore(str(tmp_path))
    out = run_pipeline(spec, store=store, model_cache=model_cache, reporter=NullReporter())
    zero, mid, final = out.results.conditions
    assert (mid.name, mid.step, final.name, final.step) == ("lora.step6", 6, "lora", 12)
    assert zero.behaviour is not None and final.behaviour is not None
    assert final.behaviour.accuracy > zero.behaviour.accuracy + 0.1
    losses = final.train_losses or []
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0]
    for cond in out.results.conditions:
        values = cond.curve("id_twonn").values
        # Layer 0: the embedding of the answer-position "\n" that every prompt ends in.
        assert values[0] is None and any(w.startswith("layer 0") for w in cond.warnings)
        assert all(v is not None and math.isfinite(v) for v in values[1:])

    reporter = NullReporter()
    again = run_pipeline(spec, store=store, model_cache=model_cache, reporter=reporter)
    outcomes = {s.name: s.outcome for s in reporter.stages}
    assert outcomes["train:lora"] == "cached"
    assert not any(name.startswith("load-model") for name in outcomes)
    assert again.results.condition("lora").curves == final.curves


def test_study_3_recipe_scaled_down_gives_every_metric_at_every_layer(
    smollm2_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    from reprlab.schemas.recipes import recipe_spec

    data = recipe_spec("decoding-icl")
    data["dataset"].update(n_eval=48, n_train=16)
    data["conditions"][1]["k"] = 2
    data["accuracy"] = False
    data.pop("correlations")  # they need accuracy; tests/unit/test_correlate.py covers them
    spec = JobSpec.model_validate(data)
    out = run_pipeline(
        spec, store=ArtifactStore(str(tmp_path)), model_cache=model_cache, reporter=NullReporter()
    )
    named = {m.name for m in spec.metrics}
    for cond in out.results.conditions:
        assert {c.metric for c in cond.curves} == named
        for curve in cond.curves:
            assert len(curve.values) == 31
            defined = curve.values[1:] if curve.metric == "attention_ratio" else curve.values
            assert all(v is not None and math.isfinite(v) for v in defined), curve.label
    (rsa,) = out.results.comparisons
    assert all(v is not None for v in rsa.mean)
