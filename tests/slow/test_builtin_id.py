"""The built-in datasets give point clouds worth measuring on the real model.

Every built-in generator's zero-shot last-token states on SmolLM2-135M-Instruct, extracted by
the pipeline at the recipes' sizes, have TwoNN >= 2 at every layer >= 1. (At layer 0 every
prompt ends in the same token, so all points coincide and TwoNN is undefined there.)
`benchmarks/builtin_id.py` prints the same per-layer values outside pytest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reprlab.schemas import JobSpec
from reprlab.server.storage import ArtifactStore
from reprlab.worker.models import ModelCache
from reprlab.worker.pipeline import NullReporter, run_pipeline

pytestmark = pytest.mark.slow

# n_eval as in the recipes (icl-vs-sft, landscape, decoding-icl; linear_regression has none).
SIZES = {"sentiment": 200, "mcq": 160, "reading_comprehension": 96, "linear_regression": 100}


def test_every_builtin_has_twonn_at_least_2_at_every_layer_from_1(
    smollm2_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    store, models = ArtifactStore(str(tmp_path)), ModelCache()
    failures = []
    for name, n_eval in SIZES.items():
        spec = JobSpec.model_validate(
            {
                "model": {"name": "smollm2-135m-instruct", "device": "cpu"},
                "dataset": {"name": name, "n_eval": n_eval, "n_train": 8, "seed": 0},
                "conditions": [{"name": "zero-shot", "k": 0}],
                "extraction": {"batch_size": 32},
                "metrics": [{"name": "id_twonn"}],
            }
        )
        out = run_pipeline(
            spec, store=store, model_cache=model_cache, reporter=NullReporter(), models=models
        )
        (cond,) = out.results.conditions
        values = cond.curve("id_twonn").values
        assert len(values) == 31
        shown = " ".join("-" if v is None else f"{v:.2f}" for v in values)
        print(f"{name} (n={n_eval}) TwoNN per layer: {shown}")
        rest = [v for v in values[1:] if v is not None]
        if len(rest) < 30 or min(rest) < 2.0:
            failures.append(f"{name}: {shown}")
    assert not failures, "TwoNN below 2 at a layer >= 1:\n" + "\n".join(failures)
