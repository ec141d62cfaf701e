"""The geometry toolkit through the pipeline on the tiny model (study 3 data: spans, attention).

Values are checked against direct calls of the estimator modules on the stored activations;
the estimator modules themselves are checked against dadapy, rsatoolbox and scikit-learn in
their own test files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from reprlab.schemas import JobSpec
from reprlab.schemas.specs import BuiltinDataset
from reprlab.server.storage import ArtifactStore
from reprlab.worker.data import load_dataset
from reprlab.worker.errors import MetricError, SpecError
from reprlab.worker.extract import Activations
from reprlab.worker.metrics.cka import linear_cka
from reprlab.worker.metrics.knn import knn_graph
from reprlab.worker.metrics.landscape import data_overlap
from reprlab.worker.metrics.probes import probe
from reprlab.worker.metrics.rsa import categorical_rdm, compare_rdms, rdm, standardise
from reprlab.worker.pipeline import NullReporter, PipelineOutput, run_pipeline

N_EVAL = 48


def _spec(model_dir: Path, **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": str(model_dir), "device": "cpu"},
        "dataset": {"name": "reading_comprehension", "n_eval": N_EVAL, "n_train": 16, "seed": 1},
        "conditions": [{"name": "zs", "k": 0}, {"name": "icl", "k": 2, "seed": 3}],
        "extraction": {
            "layers": [0, 2, -1],
            "position": "span_max",
            "attention": {"spans": ["relevant", "irrelevant"]},
        },
        "metrics": [
            {"name": "id_twonn", "bootstrap": {"n": 200}},
            {"name": "id_gride", "range_max": 16, "report_n2": 8, "bootstrap": {"n": 200}},
            {"name": "id_mle", "ks": [5, 10], "bootstrap": {"n": 200}},
            {"name": "adp", "density_k": 4, "labels": ["attribute"]},
            {"name": "label_overlap", "labels": ["attribute"], "k": 5},
            {
                "name": "rsa",
                "hypotheses": [{"label": "attribute"}, {"label": "relevant_first"}],
                "bootstrap": {"n": 100},
            },
            {"name": "probe", "labels": ["attribute"], "folds": 3},
            {"name": "attention_ratio"},
        ],
        "comparisons": [
            {"metric": "cka", "a": "zs", "b": "icl", "across_layers": True},
            {"metric": "data_overlap", "a": "zs", "b": "icl", "ks": [5, 100]},
            {"metric": "rsa", "a": "zs", "b": "icl"},
            {"metric": "partition_ari", "a": "zs", "b": "icl", "density_k": 4},
        ],
    }
    spec.update(kw)
    return spec


def _run(spec: dict[str, Any], store: ArtifactStore, model_dir: Path) -> PipelineOutput:
    return run_pipeline(JobSpec.model_validate(spec), store=store, model_cache=model_dir.parent,
                        reporter=NullReporter(), model_roots=[model_dir.parent])  # fmt: skip


@pytest.fixture(scope="module")
def job(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    store = ArtifactStore(str(tmp_path_factory.mktemp("store")))
    out = _run(_spec(tiny_model_dir), store, tiny_model_dir)
    acts = {
        c.name: Activations.from_safetensors(
            store.get_bytes(out.artifact_keys[c.activations_artifact])
        )
        for c in out.results.conditions
    }
    return out, acts


def _curve(out: PipelineOutput, cond: str, metric: str, **params: Any) -> Any:
    for c in out.results.condition(cond).curves:
        if c.metric == metric and all(c.params.get(k) == v for k, v in params.items()):
            return c
    raise KeyError((cond, metric, params))


def test_every_metric_gives_a_curve_over_every_layer(job: tuple[Any, Any]) -> None:
    out, _ = job
    for cond in out.results.conditions:
        metrics = {c.metric for c in cond.curves}
        assert metrics == {"id_twonn", "id_gride", "id_mle", "adp", "label_overlap", "rsa", "probe",
                           "attention_ratio"}  # fmt: skip
        for c in cond.curves:
            assert c.layers == [0, 2, 4] and len(c.values) == 3
        # Layers >= 1 have attention; the embedding layer has none and says so.
        ratio = _curve(out, cond.name, "attention_ratio", stat="ratio")
        assert ratio.values[0] is None and all(v is not None and v > 0 for v in ratio.values[1:])
        assert any("layer 0: attention_ratio" in w for w in cond.warnings)


def test_values_equal_direct_estimator_calls(job: tuple[Any, Any]) -> None:
    out, acts = job
    a = acts["icl"]
    assert out.results.condition("icl").n_items == N_EVAL
    data = load_dataset(
        BuiltinDataset(name="reading_comprehension", n_eval=N_EVAL, n_train=16, seed=1)
    )
    attribute = [ex.labels["attribute"] for ex in data.eval]
    for j in range(3):
        x = a.states[:, j, :].double().numpy()
        rsa = _curve(out, "icl", "rsa", hypothesis="attribute").values[j]
        ref = compare_rdms(rdm(standardise(x), "cosine"), categorical_rdm(attribute), "spearman")
        assert rsa == pytest.approx(ref, abs=1e-12)
        pr = probe(x, attribute, "logistic", folds=3, seed=0)
        c = _curve(out, "icl", "probe", label="attribute")
        assert (c.values[j], c.errors[j]) == pytest.approx((pr.mean, pr.std))
        att = a.attention
        assert att is not None
        if j > 0:
            rel, irr = att[:, j, 0].double().sum(), att[:, j, 1].double().sum()
            ratio = _curve(out, "icl", "attention_ratio", stat="ratio").values[j]
            assert ratio == pytest.approx(float(rel / irr))
    for metric, params in (("id_twonn", {}), ("rsa", {"hypothesis": "attribute"})):
        c = _curve(out, "icl", metric, **params)
        assert c.ci_low is not None and c.ci_high is not None
        for v, lo, hi in zip(c.values, c.ci_low, c.ci_high, strict=True):
            assert lo <= v <= hi


def test_comparisons_equal_direct_calls(job: tuple[Any, Any]) -> None:
    out, acts = job
    zs, icl = acts["zs"].states.double(), acts["icl"].states.double()
    comps = {(c.metric, c.params.get("k")): c for c in out.results.comparisons}
    cka = comps["cka", None]
    for j in range(3):
        assert cka.mean[j] == pytest.approx(linear_cka(zs[:, j].numpy(), icl[:, j].numpy()))
        assert cka.std[j] == 0.0
    assert cka.matrix is not None and len(cka.matrix) == 3
    assert [cka.matrix[j][j] for j in range(3)] == pytest.approx(cka.mean)
    chi = comps["data_overlap", 5]
    for j in range(1, 3):
        ga, gb = knn_graph(zs[:, j].float(), 5), knn_graph(icl[:, j].float(), 5)
        assert chi.mean[j] == pytest.approx(data_overlap(ga, gb, 5))
    # k=100 cannot be met by 48 queries: null with the reason, not a failed job.
    assert comps["data_overlap", 100].mean == [None, None, None]
    assert any("k=100" in w for w in out.results.warnings)
    ari = comps["partition_ari", None]
    assert all(v is None or -1.0 <= v <= 1.0 for v in ari.mean)
    rsa = comps["rsa", None]
    assert all(v is None or math.isfinite(v) for v in rsa.mean)


def test_a_label_field_the_data_lacks_is_a_spec_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_model_dir, metrics=[{"name": "probe", "labels": ["subject"]}],
                 comparisons=[])  # fmt: skip
    reporter = NullReporter()
    with pytest.raises(SpecError, match="subject.*every query has: answer, attribute"):
        run_pipeline(JobSpec.model_validate(spec), store=ArtifactStore(str(tmp_path)),
                     model_cache=tiny_model_dir.parent, reporter=reporter,
                     model_roots=[tiny_model_dir.parent])  # fmt: skip
    # Refused while building the data: no stage finished, so no model was loaded or run.
    assert reporter.stages == []


def test_attention_ratio_without_attention_is_refused_by_the_spec(tiny_model_dir: Path) -> None:
    spec = _spec(tiny_model_dir, extraction={"layers": [1]})
    with pytest.raises(ValueError, match="attention_ratio needs the attention"):
        JobSpec.model_validate(spec)


def test_comparison_over_steps_needs_an_sft_condition_with_checkpoints(
    tiny_model_dir: Path,
) -> None:
    spec = _spec(tiny_model_dir, comparisons=[{"a": "zs", "b": "icl", "steps": True}])
    with pytest.raises(ValueError, match="not an SFT condition with checkpoints"):
        JobSpec.model_validate(spec)


@pytest.mark.parametrize("budget", [1 << 30, 0], ids=["shared", "no-cache"])
def test_each_layer_graph_is_computed_once_per_condition_for_metrics_and_comparisons(
    tiny_model_dir: Path, tmp_path: Path, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reprlab.worker.metrics.graphs as graphs_module

    built: list[tuple[int, int]] = []

    def counting(x: Any, k: int, **kw: Any) -> Any:
        built.append((int(x.shape[0]), k))
        return knn_graph(x, k, **kw)

    monkeypatch.setattr(graphs_module, "knn_graph", counting)
    spec = _spec(
        tiny_model_dir,
        extraction={"layers": [2, -1], "position": "last"},
        metrics=[{"name": "id_twonn"}],
        comparisons=[
            {"metric": "data_overlap", "a": "zs", "b": "icl", "ks": [5, 20]},
            {"metric": "partition_ari", "a": "zs", "b": "icl", "density_k": 4},
        ],
    )
    out = run_pipeline(JobSpec.model_validate(spec), store=ArtifactStore(str(tmp_path)),
                       model_cache=tiny_model_dir.parent, reporter=NullReporter(),
                       model_roots=[tiny_model_dir.parent], graph_cache_bytes=budget)  # fmt: skip
    assert all(c.duplicates == [0, 0] for c in out.results.conditions)
    # Metrics: one graph per condition and layer, with the comparisons' largest k (ADP's
    # maxk 100, capped at 47 by 48 queries); the comparisons read them back, or (no cache)
    # build their own: 2 layers x 2 sides x 2 specs.
    assert built[:4] == [(N_EVAL, N_EVAL - 1)] * 4
    assert len(built) == (4 if budget else 12)
    comps = {(c.metric, c.params.get("k")): c for c in out.results.comparisons}
    assert all(v is not None for v in comps["data_overlap", 20].mean)


def test_duplicates_error_fails_the_job_naming_the_condition_and_layer(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # At the embedding layer the last token's state is the same for every prompt.
    spec = _spec(tiny_model_dir, extraction={"layers": [0], "position": "last"},
                 metrics=[{"name": "id_twonn"}], comparisons=[])  # fmt: skip
    out = _run(spec, ArtifactStore(str(tmp_path / "a")), tiny_model_dir)
    assert out.results.condition("zs").duplicates == [N_EVAL - 1]
    with pytest.raises(MetricError, match=r"^zs, layer 0: 47 of 48 rows duplicate another row"):
        _run({**spec, "duplicates": "error"}, ArtifactStore(str(tmp_path / "b")), tiny_model_dir)
