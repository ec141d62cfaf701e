"""Representation change vs behaviour (Yousefi et al.): `worker/correlate.py` against scipy.

Every r is checked against `scipy.stats.pearsonr` / `spearmanr` computed here on the same
differences; every interval against a percentile bootstrap written out here from the same
draws (numpy's default generator with the spec's seed, n items per resample, as the engine
draws), with both sides recomputed on each resample. Then the spec's checks, and one job on
the tiny model whose correlations must equal a recomputation from its own curves, stored
activations and per-query choices.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from rich.console import Console
from scipy import stats

from reprlab.client.plots import format_correlations
from reprlab.schemas import JobSpec
from reprlab.schemas.correlations import CorrelationResult
from reprlab.schemas.errors import spec_problems
from reprlab.schemas.recipes import recipe_spec
from reprlab.schemas.results import BehaviourResult, ConditionResult, JobResults, LayerCurve
from reprlab.server.storage import ArtifactStore
from reprlab.worker.correlate import CorrelationInputs, check_correlation_layers, correlate
from reprlab.worker.data import load_dataset
from reprlab.worker.errors import SpecError
from reprlab.worker.extract import Activations
from reprlab.worker.metrics.rsa import categorical_rdm, compare_rdms, rdm, standardise
from reprlab.worker.pipeline import NullReporter, run_pipeline

LAYERS = [0, 1, 2]
OPTIONS = ["Lima", "Oslo"]


def _spec(correlations: list[dict[str, Any]], ks: list[int] | None = None, **kw: Any) -> JobSpec:
    data: dict[str, Any] = {
        "model": {"name": "tiny"},
        "dataset": {"name": "reading_comprehension", "n_eval": 8, "n_train": 8},
        "conditions": [{"name": "zs", "k": 0}, {"name": "icl", "k": ks or list(range(1, 11))}],
        "extraction": {"layers": LAYERS, "attention": {"spans": ["relevant", "irrelevant"]}},
        "metrics": [
            {"name": "probe", "labels": ["attribute"]},
            {"name": "attention_ratio"},
            {"name": "rsa", "hypotheses": [{"label": "answer"}]},
        ],
        "accuracy": True,
        "correlations": correlations,
    }
    data.update(kw)
    return JobSpec.model_validate(data)


def _result(
    name: str,
    values: list[float | None],
    accuracy: float,
    *,
    metric: str = "probe",
    params: dict[str, Any] | None = None,
    choices: list[int] | None = None,
    n_items: int = 8,
) -> ConditionResult:
    curve = LayerCurve(metric=metric, label=f"{metric} curve", layers=LAYERS, values=values,
                       params=params if params is not None else {"label": "attribute"})  # fmt: skip
    behaviour = BehaviourResult(accuracy=accuracy, accuracy_norm=accuracy,
                                first_token_accuracy=accuracy, n_items=n_items, options=OPTIONS,
                                choices=choices or [])  # fmt: skip
    group = name.split(".")[0]
    return ConditionResult(name=name, group=group, paradigm="icl", n_items=n_items,
                           layers=LAYERS, curves=[curve], behaviour=behaviour)  # fmt: skip


def _points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[n + 1, layers] metric values (row 0: the reference) and n + 1 accuracies, correlated."""
    rng = np.random.default_rng(seed)
    acc = rng.uniform(0.2, 0.9, n + 1)
    values = acc[:, None] * np.array([0.5, 1.0, -1.0]) + rng.normal(0, 0.15, (n + 1, 3))
    return values, acc


def _reference_r(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    p, s = stats.pearsonr(x, y), stats.spearmanr(x, y)
    return float(p.statistic), float(p.pvalue), float(s.statistic), float(s.pvalue)


def _percentile(boot: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    ok = boot[np.isfinite(boot)]
    lo, hi = np.quantile(ok, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def _r_rows(x: np.ndarray, y: np.ndarray, rank: bool) -> np.ndarray:
    out = np.full(x.shape[0], np.nan)
    for b in range(x.shape[0]):
        if np.ptp(x[b]) > 0 and np.ptp(y[b]) > 0:
            f = stats.spearmanr if rank else stats.pearsonr
            out[b] = f(x[b], y[b]).statistic
    return out


# --- across conditions, from the curves ------------------------------------------------------


def test_across_conditions_equals_scipy_on_the_differences_from_the_reference() -> None:
    values, acc = _points(10)
    names = ["zs", *(f"icl.k{k}" for k in range(1, 11))]
    results = [_result(n, list(v), a) for n, v, a in zip(names, values, acc, strict=True)]
    spec = _spec([{"metric": "probe", "reference": "zs", "bootstrap": {"n": 400, "seed": 3}}])
    (res,) = correlate(spec, results, CorrelationInputs(n_blocks=2))
    assert res.across == "conditions" and res.points == names[1:] and res.n == [10, 10, 10]
    assert res.curve == {"label": "attribute"} and res.reference == "zs"
    dy = acc[1:] - acc[0]
    assert res.delta_behaviour == pytest.approx(dy)
    for j in range(3):
        dx = values[1:, j] - values[0, j]
        assert res.delta_metric[j] == pytest.approx(dx)
        got = (res.pearson[j], res.pearson_p[j], res.spearman[j], res.spearman_p[j])
        assert got == pytest.approx(_reference_r(dx, dy), abs=1e-12)
        # The interval resamples the 10 points (the probe default), as written out here.
        idx = np.random.default_rng(3).integers(0, 10, size=(400, 10))
        distinct = np.array([len(set(row)) for row in idx])
        for rank, lo, hi in ((False, res.pearson_ci_low, res.pearson_ci_high),
                             (True, res.spearman_ci_low, res.spearman_ci_high)):  # fmt: skip
            boot = np.where(distinct >= 3, _r_rows(dx[idx], dy[idx], rank), np.nan)
            assert lo is not None and hi is not None
            assert (lo[j], hi[j]) == pytest.approx(_percentile(boot), abs=1e-12)
            value = res.spearman[j] if rank else res.pearson[j]
            assert lo[j] <= value <= hi[j]
    assert "Pearson and Spearman r of Δ probe curve vs Δ accuracy" in res.label
    assert "across conditions" in res.label and "resamples of the points" in str(res.ci)
    assert res.warnings == []


def test_fewer_than_three_conditions_give_null_with_the_reason() -> None:
    values, acc = _points(2)
    results = [
        _result(n, list(v), a)
        for n, v, a in zip(["zs", "icl.k1", "icl.k2"], values, acc, strict=True)
    ]
    spec = _spec([{"metric": "probe", "reference": "zs"}], ks=[1, 2])
    (res,) = correlate(spec, results, CorrelationInputs(n_blocks=2))
    assert res.pearson == res.spearman == [None, None, None] and res.n == [2, 2, 2]
    assert res.pearson_ci_low == [None, None, None]
    assert len(res.warnings) == 3
    assert all("2 condition points with a value; a correlation needs at least 3" in w
               for w in res.warnings)  # fmt: skip


def test_a_layer_left_with_two_points_or_a_constant_gain_is_null_with_the_reason() -> None:
    values, acc = _points(3)
    rows = [list(v) for v in values]
    rows[2][1] = None  # icl.k2 undefined at layer 1: two points left there
    names = ["zs", "icl.k1", "icl.k2", "icl.k3"]
    results = [_result(n, r, a) for n, r, a in zip(names, rows, acc, strict=True)]
    spec = _spec([{"metric": "probe", "reference": "zs", "bootstrap": None}], ks=[1, 2, 3])
    (res,) = correlate(spec, results, CorrelationInputs(n_blocks=2))
    assert res.n == [3, 2, 3] and res.pearson[1] is None
    assert res.pearson[0] is not None and res.pearson[2] is not None
    assert res.pearson_ci_low is None and res.ci is None
    assert res.warnings == [
        "layer 1: r undefined: 2 condition points with a value; a correlation needs at least 3"
    ]
    same = [_result(n, list(v), 0.5) for n, v in zip(names, values, strict=True)]
    (flat,) = correlate(spec, same, CorrelationInputs(n_blocks=2))
    assert flat.pearson == [None] * 3
    assert all("behavioural change is the same at every condition" in w for w in flat.warnings)


def test_conditions_choose_the_points_by_condition_or_result_name() -> None:
    values, acc = _points(10)
    names = ["zs", *(f"icl.k{k}" for k in range(1, 11))]
    results = [_result(n, list(v), a) for n, v, a in zip(names, values, acc, strict=True)]
    spec = _spec([{"metric": "probe", "reference": "icl.k1",
                   "conditions": ["icl.k2", "icl.k3", "icl.k5"], "bootstrap": None}])  # fmt: skip
    (res,) = correlate(spec, results, CorrelationInputs(n_blocks=2))
    assert res.points == ["icl.k2", "icl.k3", "icl.k5"] and res.reference == "icl.k1"
    rows = [2, 3, 5]
    dx, dy = values[rows, 0] - values[1, 0], acc[rows] - acc[1]
    assert res.pearson[0] == pytest.approx(stats.pearsonr(dx, dy).statistic, abs=1e-12)
    every = _spec([{"metric": "probe", "reference": "zs", "conditions": ["icl"]}])
    (all_icl,) = correlate(every, results, CorrelationInputs(n_blocks=2))
    assert all_icl.points == names[1:]
    # A sweep named as the points leaves out its member that is the reference.
    rest = _spec([{"metric": "probe", "reference": "icl.k1", "conditions": ["icl"]}])
    (others,) = correlate(rest, results, CorrelationInputs(n_blocks=2))
    assert others.points == names[2:]


# --- resampling the queries: both sides recomputed -------------------------------------------

N_Q = 60


def _attention_job(
    seed: int = 0,
) -> tuple[list[ConditionResult], dict[str, Activations], list[str]]:
    """Four results with per-query attention masses, choices and curves that match them."""
    rng = np.random.default_rng(seed)
    gold_idx = rng.integers(0, 2, N_Q)
    gold = [OPTIONS[g] for g in gold_idx]
    results, acts = [], {}
    for c, name in enumerate(["zs", "icl.k1", "icl.k2", "icl.k3"]):
        rel = rng.uniform(0.05, 0.3, (N_Q, 3)) * (1 + 0.3 * c)
        irr = rng.uniform(0.05, 0.3, (N_Q, 3))
        att = np.stack([rel, irr], axis=-1)
        att[:, 0] = np.nan  # the embedding layer has no attention
        # Queries whose relevant mass grows more are more often right.
        p_right = np.clip(0.3 + 0.15 * c + 2 * (rel[:, 1] - rel[:, 1].mean()), 0, 1)
        right = rng.uniform(size=N_Q) < p_right
        choices = [int(g if ok else 1 - g) for g, ok in zip(gold_idx, right, strict=True)]
        ratio = [None, *(float(rel[:, j].sum() / irr[:, j].sum()) for j in (1, 2))]
        results.append(_result(name, ratio, float(right.mean()), metric="attention_ratio",
                               params={"stat": "ratio"}, choices=choices, n_items=N_Q))  # fmt: skip
        acts[name] = Activations(
            layers=LAYERS, states=torch.randn(N_Q, 3, 8, dtype=torch.float64), n_tokens=[5] * N_Q,
            attention=torch.from_numpy(att).float(), attention_spans=["relevant", "irrelevant"],
        )  # fmt: skip
    # The curves from the stored (float32) masses, as the metric computes them.
    for r in results:
        a = acts[r.name].attention
        assert a is not None
        m = a.double().numpy()
        r.curves[0].values = [None, *(float(m[:, j, 0].sum() / m[:, j, 1].sum()) for j in (1, 2))]
    return results, acts, gold


def test_across_conditions_resampling_queries_recomputes_ratio_and_accuracy() -> None:
    results, acts, gold = _attention_job()
    spec = _spec([{"metric": "attention_ratio", "reference": "zs", "across": ["conditions"],
                   "bootstrap": {"n": 300, "seed": 5}}], ks=[1, 2, 3])  # fmt: skip
    inputs = CorrelationInputs(n_blocks=2, gold=gold, acts=acts)
    (res,) = correlate(spec, results, inputs)
    assert res.pearson[0] is None and "layer 0" in res.warnings[0]
    assert "resamples of the queries" in str(res.ci) and "both sides recomputed" in str(res.ci)
    idx = np.random.default_rng(5).integers(0, N_Q, size=(300, N_Q))
    for j in (1, 2):
        dx = np.array([r.curves[0].values[j] for r in results[1:]]) - results[0].curves[0].values[j]
        dy = np.array([r.behaviour.accuracy for r in results[1:]]) - results[0].behaviour.accuracy
        got = (res.pearson[j], res.pearson_p[j], res.spearman[j], res.spearman_p[j])
        assert got == pytest.approx(_reference_r(dx, dy), abs=1e-12)
        # Reference bootstrap: each result's ratio of summed masses and accuracy on the draws.
        ratio, accuracy = [], []
        for r in results:
            m = acts[r.name].attention.double().numpy()  # type: ignore[union-attr]
            rel, irr = m[:, j, 0], m[:, j, 1]
            ratio.append(rel[idx].sum(axis=1) / irr[idx].sum(axis=1))
            right = np.array(
                [OPTIONS[c] == g for c, g in zip(r.behaviour.choices, gold, strict=True)]
            )
            accuracy.append(right[idx].mean(axis=1))
        bx = np.stack(ratio[1:], axis=1) - ratio[0][:, None]
        by = np.stack(accuracy[1:], axis=1) - accuracy[0][:, None]
        for rank, lo, hi in ((False, res.pearson_ci_low, res.pearson_ci_high),
                             (True, res.spearman_ci_low, res.spearman_ci_high)):  # fmt: skip
            assert lo is not None and hi is not None
            assert (lo[j], hi[j]) == pytest.approx(_percentile(_r_rows(bx, by, rank)), abs=1e-9)
        # A resample whose three accuracy gains tie leaves r undefined; it is counted.
        undefined = int(np.sum(~np.isfinite(_r_rows(bx, by, False))))
        assert res.undefined_resamples is not None and res.undefined_resamples[j] == undefined


def test_across_items_correlates_per_query_ratio_change_with_correctness_change() -> None:
    results, acts, gold = _attention_job(seed=1)
    spec = _spec([{"metric": "attention_ratio", "reference": "zs", "across": ["items"],
                   "bootstrap": {"n": 300, "seed": 2}}], ks=[1, 2, 3])  # fmt: skip
    out = correlate(spec, results, CorrelationInputs(n_blocks=2, gold=gold, acts=acts))
    assert [r.condition for r in out] == ["icl.k1", "icl.k2", "icl.k3"]

    def per_query(name: str, j: int) -> tuple[np.ndarray, np.ndarray]:
        m = acts[name].attention.double().numpy()  # type: ignore[union-attr]
        ratio = m[:, j, 0] / m[:, j, 1]
        cond = next(r for r in results if r.name == name)
        assert cond.behaviour is not None
        right = np.array(
            [OPTIONS[c] == g for c, g in zip(cond.behaviour.choices, gold, strict=True)]
        )
        return ratio, right.astype(float)

    idx = np.random.default_rng(2).integers(0, N_Q, size=(300, N_Q))
    for res in out:
        assert res.across == "items" and res.n == [0, N_Q, N_Q] and res.pearson[0] is None
        assert "per-query attention ratio 'relevant' / 'irrelevant'" in res.label
        assert "correctness per query" in res.y
        for j in (1, 2):
            (xc, yc), (xr, yr) = per_query(str(res.condition), j), per_query("zs", j)
            dx, dy = xc - xr, yc - yr
            got = (res.pearson[j], res.pearson_p[j], res.spearman[j], res.spearman_p[j])
            assert got == pytest.approx(_reference_r(dx, dy), abs=1e-9)
            for rank, lo, hi in ((False, res.pearson_ci_low, res.pearson_ci_high),
                                 (True, res.spearman_ci_low, res.spearman_ci_high)):  # fmt: skip
                assert lo is not None and hi is not None
                ref = _percentile(_r_rows(dx[idx], dy[idx], rank))
                assert (lo[j], hi[j]) == pytest.approx(ref, abs=1e-9)
                assert lo[j] <= (res.spearman[j] if rank else res.pearson[j]) <= hi[j]


def test_rsa_resampling_queries_compares_the_rdms_on_the_drawn_pairs() -> None:
    rng = np.random.default_rng(4)
    n = 30
    answer = [str(v) for v in rng.integers(0, 3, n)]
    hyp = categorical_rdm(answer)
    gold = [OPTIONS[g] for g in rng.integers(0, 2, n)]
    results, acts = [], {}
    for c, name in enumerate(["zs", "icl.k1", "icl.k2", "icl.k3", "icl.k4"]):
        centre = np.array([[float(a == v) for v in "012"] for a in answer]) * (0.5 + c)
        x = np.concatenate([centre, rng.normal(size=(n, 5))], axis=1)
        states = np.stack([x + rng.normal(scale=0.5, size=x.shape) for _ in LAYERS], axis=1)
        acts[name] = Activations(LAYERS, torch.from_numpy(states), [4] * n)
        curve = [compare_rdms(rdm(standardise(states[:, j]), "cosine"), hyp, "spearman")
                 for j in range(3)]  # fmt: skip
        choices = [int(rng.uniform() < 0.3 + 0.1 * c) for _ in range(n)]
        acc = float(np.mean([OPTIONS[ch] == g for ch, g in zip(choices, gold, strict=True)]))
        results.append(_result(name, curve, acc, metric="rsa", params={"hypothesis": "answer"},
                               choices=choices, n_items=n))  # fmt: skip
    spec = _spec([{"metric": "rsa", "reference": "zs", "bootstrap": {"n": 60, "seed": 1},
                   "max_undefined": 0.1}], ks=[1, 2, 3, 4])  # fmt: skip
    inputs = CorrelationInputs(n_blocks=2, gold=gold, acts=acts, labels={"answer": answer})
    (res,) = correlate(spec, results, inputs)
    from reprlab.worker.metrics.bootstrap import rdm_statistic

    idx = np.random.default_rng(1).integers(0, n, size=(60, n))
    j = 2
    dx = np.array([r.curves[0].values[j] for r in results[1:]]) - results[0].curves[0].values[j]
    dy = np.array([r.behaviour.accuracy for r in results[1:]]) - results[0].behaviour.accuracy
    assert res.pearson[j] == pytest.approx(stats.pearsonr(dx, dy).statistic, abs=1e-12)
    rsa = [
        rdm_statistic(rdm(standardise(acts[r.name].states[:, j].numpy()), "cosine"), hyp,
                      "spearman")(idx)
        for r in results
    ]  # fmt: skip
    right = [
        np.array([OPTIONS[ch] == g for ch, g in zip(r.behaviour.choices, gold, strict=True)])
        for r in results
    ]
    bx = np.stack(rsa[1:], axis=1) - rsa[0][:, None]
    by = (
        np.stack([w[idx].mean(axis=1) for w in right[1:]], axis=1)
        - right[0][idx].mean(axis=1)[:, None]
    )
    assert res.pearson_ci_low is not None and res.pearson_ci_high is not None
    ref = _percentile(_r_rows(bx, by, False))
    assert (res.pearson_ci_low[j], res.pearson_ci_high[j]) == pytest.approx(ref, abs=1e-9)
    assert res.undefined_resamples is not None
    assert res.undefined_resamples[j] == int(np.sum(~np.isfinite(_r_rows(bx, by, False))))


def test_an_undefined_share_above_max_undefined_nulls_the_interval_and_says_so() -> None:
    values, acc = _points(3)
    names = ["zs", "icl.k1", "icl.k2", "icl.k3"]
    results = [_result(n, list(v), a) for n, v, a in zip(names, values, acc, strict=True)]
    spec = _spec([{"metric": "probe", "reference": "zs"}], ks=[1, 2, 3])
    (res,) = correlate(spec, results, CorrelationInputs(n_blocks=2))
    # 3 points: a resample draws all three distinct only 6 times in 27.
    assert res.pearson[0] is not None and res.pearson_ci_low == [None] * 3
    assert res.undefined_resamples is not None and all(u > 500 for u in res.undefined_resamples)
    assert all("no interval: bootstrap: r is undefined on" in w and "max_undefined 0.01" in w
               for w in res.warnings)  # fmt: skip


# --- the spec's checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metric": "probe", "reference": "zs", "across": ["items"]},
         "across 'items' is defined for attention_ratio only"),
        ({"metric": "probe", "reference": "zs", "resample": "items"},
         "resample 'items' would refit the probes"),
        ({"metric": "attention_ratio", "reference": "nope"},
         "the reference 'nope' names no condition of this job"),
        ({"metric": "attention_ratio", "reference": "icl"},
         r"the reference 'icl' has several results \(icl.k1, icl.k2, icl.k3\); name one"),
        ({"metric": "rsa", "reference": "zs", "curve": {"hypothesis": "colour"}},
         r"curve \{'hypothesis': 'colour'\} selects no curve of the metric"),
        ({"metric": "attention_ratio", "reference": "zs", "curve": {"stat": "ratio", "head": 0}},
         "curve 'head' needs stat 'ratio' and extraction.attention.per_head"),
        ({"metric": "attention_ratio", "reference": "zs", "conditions": ["icl", "lora"]},
         "conditions names 'lora', which is no condition or result of this job"),
        ({"metric": "attention_ratio", "reference": "icl.k1", "conditions": ["icl.k1", "icl"]},
         "the reference 'icl.k1' is also one of its conditions"),
        ({"metric": "attention_ratio", "reference": "zs", "layers": [1, 3]},
         r"layers \[3\] are not extracted"),
        ({"metric": "attention_ratio", "reference": "zs", "layers": [1, 1]},
         "distinct layer indices"),
        ({"metric": "attention_ratio", "reference": "zs", "max_undefined": 0.9},
         "less than or equal to 0.5"),
        ({"metric": "cka", "reference": "zs"}, "Input should be 'rsa', 'attention_ratio'"),
        ({"metric": "rsa", "reference": "zs", "bogus": 1}, "Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_bad_correlations_are_refused_with_what_to_fix(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec([change], ks=[1, 2, 3])


def test_a_metric_the_job_does_not_compute_and_missing_accuracy_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"'probe' is not among the job's metrics \(rsa\)"):
        _spec([{"metric": "probe", "reference": "zs"}],
              metrics=[{"name": "rsa", "hypotheses": [{"label": "answer"}]}])  # fmt: skip
    with pytest.raises(ValidationError, match="set accuracy: true"):
        _spec([{"metric": "rsa", "reference": "zs"}], accuracy=False)


def test_the_422_message_names_the_problem() -> None:
    body = {"model": {"name": "smollm2-135m-instruct"},
            "dataset": {"name": "reading_comprehension", "n_eval": 8, "n_train": 8},
            "conditions": [{"name": "zs", "k": 0}, {"name": "icl", "k": [1, 2, 3]}],
            "metrics": [{"name": "probe", "labels": ["attribute"]}],
            "correlations": [{"metric": "probe", "reference": "zs", "curve": {"label": "x"}}],
            "accuracy": True}  # fmt: skip
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(body)
    message = spec_problems([dict(e) for e in info.value.errors()], body)
    assert message == (
        "body: correlation of 'probe': curve {'label': 'x'} selects no curve of the metric; "
        "give {'label': one of ['attribute']}"
    )


def test_negative_layers_are_checked_against_the_model_before_model_work() -> None:
    extraction = {"layers": [0, 1], "attention": {"spans": ["relevant", "irrelevant"]}}
    spec = _spec([{"metric": "probe", "reference": "zs", "layers": [-1]}], extraction=extraction)
    with pytest.raises(SpecError, match=r"layers \[4\] are not extracted \(extracted: \[0, 1\]\)"):
        check_correlation_layers(spec, 4)
    check_correlation_layers(_spec([{"metric": "probe", "reference": "zs", "layers": [-1]}]), 2)


def test_the_recipe_correlates_four_icl_points_with_the_zero_shot_reference() -> None:
    spec = JobSpec.model_validate(recipe_spec("decoding-icl"))
    assert [c.metric for c in spec.correlations] == ["attention_ratio", "rsa", "probe"]
    (icl,) = [c for c in spec.conditions if c.name == "icl"]
    assert icl.expanded_names() == ["icl.k1", "icl.k2", "icl.k4", "icl.k8"]
    assert max(icl.k) <= spec.dataset.n_train  # type: ignore[arg-type]
    assert spec.correlations[2].resampling == "conditions"
    assert spec.correlations[2].bootstrap is None  # 4 points: r and p only
    assert spec.correlations[0].scopes == ["conditions", "items"]


def test_the_table_prints_r_intervals_and_n_per_layer() -> None:
    values, acc = _points(10)
    names = ["zs", *(f"icl.k{k}" for k in range(1, 11))]
    results = [_result(n, list(v), a) for n, v, a in zip(names, values, acc, strict=True)]
    spec = _spec([{"metric": "probe", "reference": "zs", "bootstrap": {"n": 100}}])
    corr = correlate(spec, results, CorrelationInputs(n_blocks=2))
    job = JobResults.model_validate({
        "job_id": "j", "conditions": [r.model_dump() for r in results],
        "correlations": [c.model_dump() for c in corr],
        "model": {"name": "m", "resolved": "m", "n_layers": 2, "hidden_size": 8,
                  "dtype": "float32", "device": "cpu"},
    })  # fmt: skip
    assert isinstance(job.correlations[0], CorrelationResult)
    (table,) = format_correlations(job)
    console = Console(file=io.StringIO(), width=200)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Pearson r" in text and "Spearman r" in text and "resamples of the points" in text
    assert f"{corr[0].pearson[1]:.3f}" in text


def test_reprlab_results_prints_the_correlation_tables_and_their_warnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import reprlab.client.cli as cli

    values, acc = _points(3)
    names = ["zs", "icl.k1", "icl.k2", "icl.k3"]
    results = [_result(n, list(v), a) for n, v, a in zip(names, values, acc, strict=True)]
    spec = _spec([{"metric": "probe", "reference": "zs"}], ks=[1, 2, 3])
    job = JobResults(
        job_id="j", conditions=results,
        correlations=correlate(spec, results, CorrelationInputs(n_blocks=2)),
        model={"name": "m", "resolved": "m", "n_layers": 2, "hidden_size": 8,  # type: ignore[arg-type]
               "dtype": "float32", "device": "cpu"},
    )  # fmt: skip
    console = Console(file=io.StringIO(), width=200)
    monkeypatch.setattr(cli, "out", console)
    cli._print_results(job, None)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Spearman r" in text and "across conditions" in text
    assert "correlation of probe (conditions): layer 0: no interval" in text
    console.file = io.StringIO()
    cli._print_results(job, "probe")
    assert "Spearman r" in console.file.getvalue()


# --- one job on the tiny model ----------------------------------------------------------------

# Two one-letter places: the random model's choice between them moves with the prompt (between
# two words such as 'Lima' and 'Oslo' it always picks the same one, at every k).
_PLACES = ["A", "B"]
_NAMES = ["Alice", "Bruno", "Chloe", "Dmitri", "Esther", "Farid", "Greta", "Hugo", "Ingrid"]


def _inline_items() -> list[dict[str, Any]]:
    """Reading comprehension with a distractor and two answers, so that a random model's
    accuracy moves with k (the built-in set has 96 options, which it never gets right)."""
    items = []
    for a, b in ((a, b) for a in _NAMES for b in _NAMES if a != b):
        for value, other in (_PLACES, _PLACES[::-1]):
            first, second = f"{a} lives in {value}.", f"{b} lives in {other}."
            text = f"{first} {second}\nQuestion: Where does {a} live?\nAnswer:"
            relevant_first = len(items) % 2 == 0
            if not relevant_first:
                first, second = second, first
                text = f"{first} {second}\nQuestion: Where does {a} live?\nAnswer:"
            rel = (
                (0, len(first))
                if relevant_first
                else (len(first) + 1, len(first) + 1 + len(second))
            )
            irr = (
                (len(first) + 1, len(first) + 1 + len(second))
                if relevant_first
                else (0, len(first))
            )
            items.append({"input": text, "output": value,
                          "labels": {"answer": value, "relevant_first": int(relevant_first)},
                          "spans": {"relevant": list(rel), "irrelevant": list(irr)}})  # fmt: skip
    return items


def test_a_job_on_the_tiny_model_gives_correlations_equal_to_its_own_data(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec = JobSpec.model_validate({
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "dataset": {"source": "inline", "items": _inline_items(), "n_eval": 40, "n_train": 16,
                    "seed": 0},
        "conditions": [{"name": "zs", "k": 0}, {"name": "icl", "k": [1, 2, 3, 4], "seed": 1}],
        "extraction": {"layers": [0, 2, -1], "position": "span_max",
                       "attention": {"spans": ["relevant", "irrelevant"]}},
        "metrics": [{"name": "attention_ratio"},
                    {"name": "probe", "labels": ["answer"], "folds": 3},
                    {"name": "rsa", "hypotheses": [{"label": "answer"}]}],
        "accuracy": True,
        "correlations": [
            {"metric": "attention_ratio", "reference": "zs", "bootstrap": {"n": 200}},
            {"metric": "rsa", "reference": "zs", "bootstrap": {"n": 50}},
            {"metric": "probe", "reference": "zs", "max_undefined": 0.5},
        ],
    })  # fmt: skip
    store = ArtifactStore(str(tmp_path))
    out = run_pipeline(spec, store=store, model_cache=tiny_model_dir.parent,
                       reporter=NullReporter(), model_roots=[tiny_model_dir.parent])  # fmt: skip
    res = out.results
    assert [(c.metric, c.across, c.condition) for c in res.correlations] == [
        ("attention_ratio", "conditions", None),
        *(("attention_ratio", "items", f"icl.k{k}") for k in (1, 2, 3, 4)),
        ("rsa", "conditions", None),
        ("probe", "conditions", None),
    ]
    ref, points = res.conditions[0], res.conditions[1:]
    assert ref.behaviour is not None
    dy = np.array([p.behaviour.accuracy for p in points if p.behaviour]) - ref.behaviour.accuracy
    assert np.ptp(dy) > 0, "the accuracies must differ for r to be defined"
    for corr in (res.correlations[0], res.correlations[5], res.correlations[6]):
        assert corr.layers == [0, 2, 4] and corr.points == [p.name for p in points]
        params = corr.curve
        checked = 0
        for j in range(3):
            if corr.metric == "attention_ratio" and j == 0:
                assert corr.pearson[0] is None  # no attention at the embedding layer
                continue
            x = np.array([_value(p, corr.metric, params, j) for p in points])
            dx = x - _value(ref, corr.metric, params, j)
            if np.ptp(dx) == 0:  # the embeddings do not see the demonstrations
                assert corr.pearson[j] is None and f"layer {corr.layers[j]}: r undefined" in (
                    " ".join(corr.warnings)
                )
                continue
            got = (corr.pearson[j], corr.pearson_p[j], corr.spearman[j], corr.spearman_p[j])
            assert all(v is not None and math.isfinite(v) for v in got), (corr.metric, j)
            assert got == pytest.approx(_reference_r(dx, dy), abs=1e-12)
            checked += 1
        assert checked >= 2, corr.warnings  # layers 2 and 4 see the demonstrations
    ends = res.correlations[0]
    assert ends.pearson_ci_low is not None and ends.pearson_ci_high is not None
    lows, highs = ends.pearson_ci_low[1:], ends.pearson_ci_high[1:]
    assert all(v is not None and math.isfinite(v) for v in lows + highs)
    # Across items, from the stored activations, the choices and the data's gold outputs.
    gold = [q.output for q in load_dataset(spec.dataset).eval]
    acts = {
        c.name: Activations.from_safetensors(
            store.get_bytes(out.artifact_keys[str(c.activations_artifact)])
        )
        for c in res.conditions
    }

    def per_query(c: ConditionResult) -> tuple[np.ndarray, np.ndarray]:
        m = acts[c.name].attention.double().numpy()  # type: ignore[union-attr]
        assert c.behaviour is not None
        right = [
            c.behaviour.options[i] == g for i, g in zip(c.behaviour.choices, gold, strict=True)
        ]
        return m[:, 2, 0] / m[:, 2, 1], np.array(right, dtype=float)

    xr, yr = per_query(ref)
    for corr, point in zip(res.correlations[1:5], points, strict=True):
        xc, yc = per_query(point)
        assert corr.n[2] == 40
        if np.ptp(yc - yr) == 0:
            assert corr.pearson[2] is None and corr.warnings
            continue
        expect = _reference_r(xc - xr, yc - yr)
        assert (corr.pearson[2], corr.pearson_p[2], corr.spearman[2], corr.spearman_p[2]) == (
            pytest.approx(expect, abs=1e-9)
        )


def _value(c: ConditionResult, metric: str, params: dict[str, Any], j: int) -> float:
    (curve,) = [k for k in c.curves if k.metric == metric and k.params == params]
    value = curve.values[j]
    assert value is not None
    return value
