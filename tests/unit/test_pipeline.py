"""The pipeline in-process on the tiny model: k-sweeps, recorded demonstrations, reuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reprlab.schemas import JobSpec
from reprlab.server.storage import ArtifactStore
from reprlab.worker.errors import SpecError
from reprlab.worker.pipeline import NullReporter, PipelineOutput, run_pipeline


def _run(
    spec: dict[str, Any], store: ArtifactStore, model_dir: Path
) -> tuple[PipelineOutput, dict[str, str]]:
    reporter = NullReporter()
    out = run_pipeline(JobSpec.model_validate(spec), store=store, model_cache=model_dir.parent,
                       reporter=reporter, model_roots=[model_dir.parent])  # fmt: skip
    return out, {s.name: s.outcome for s in reporter.stages}


def _spec(model_dir: Path, **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": str(model_dir), "device": "cpu"},
        "dataset": {"name": "sentiment", "n_eval": 30, "n_train": 12, "seed": 2},
        "conditions": [{"name": "icl", "k": [0, 3], "seed": 4}],
        "extraction": {"layers": [1, -1]},
        "metrics": [{"name": "id_twonn"}],
    }
    spec.update(kw)
    return spec


def test_k_sweep_gives_one_result_per_k_with_its_demonstrations(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out, stages = _run(_spec(tiny_model_dir), ArtifactStore(str(tmp_path)), tiny_model_dir)
    zero, three = out.results.conditions
    assert (zero.name, zero.k, three.name, three.k) == ("icl.k0", 0, "icl.k3", 3)
    assert zero.demos == [[]] * 30
    assert len(three.demos) == 30 and all(len(set(d)) == 3 for d in three.demos)
    assert all(0 <= j < 12 for d in three.demos for j in d)
    assert three.selection == "random" and three.layers == [1, 4]
    assert {"extract:icl.k0", "extract:icl.k3"} <= set(stages)


def test_changing_only_a_metric_parameter_runs_no_forward_pass(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = ArtifactStore(str(tmp_path))
    first, stages = _run(_spec(tiny_model_dir), store, tiny_model_dir)
    assert stages["extract:icl.k3"] == "done" and "load-model" in stages
    spec = _spec(tiny_model_dir, metrics=[{"name": "id_twonn", "discard_fraction": 0.2}])
    second, stages = _run(spec, store, tiny_model_dir)
    assert stages["extract:icl.k0"] == stages["extract:icl.k3"] == "cached"
    assert "load-model" not in stages
    a, b = first.results.conditions[1].curves[0], second.results.conditions[1].curves[0]
    assert a.params != b.params and a.values != b.values


def test_layers_beyond_the_servers_limit_fail_before_any_model_work(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The tiny model has 4 blocks: 'all' is 5 layers (embeddings + 4), more than a limit of 3.
    store = ArtifactStore(str(tmp_path))
    reporter = NullReporter()
    spec = JobSpec.model_validate(_spec(tiny_model_dir, extraction={"layers": "all"}))
    with pytest.raises(SpecError, match="is 5 layers .* at most max_layers = 3") as err:
        run_pipeline(spec, store=store, model_cache=tiny_model_dir.parent, reporter=reporter,
                     model_roots=[tiny_model_dir.parent], max_layers=3)  # fmt: skip
    assert "at most 3 layer indices" in (err.value.hint or "")
    assert [s.name for s in reporter.stages] == ["data"]  # no model loaded, nothing extracted
    # Within the limit (an explicit list of 2), the job runs.
    out = run_pipeline(JobSpec.model_validate(_spec(tiny_model_dir)), store=store,
                       model_cache=tiny_model_dir.parent, reporter=NullReporter(),
                       model_roots=[tiny_model_dir.parent], max_layers=3)  # fmt: skip
    assert out.results.conditions[0].layers == [1, 4]
