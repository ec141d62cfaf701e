"""Mean and spread over seeds, and cross-condition comparisons, against numpy/sklearn."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.metrics.pairwise import cosine_similarity

from reprlab.schemas import JobSpec
from reprlab.schemas.metrics import BootstrapSpec, CosineComparison
from reprlab.schemas.results import BehaviourResult, ConditionResult, LayerCurve
from reprlab.worker.aggregate import Member, compare_conditions, seed_aggregates
from reprlab.worker.metrics.compare import cosine_per_layer


def test_cosine_per_layer_is_the_mean_of_sklearn_row_cosines() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, 3, 16, generator=gen), torch.randn(20, 3, 16, generator=gen)
    ours = cosine_per_layer(a, b)
    for j in range(3):
        ref = np.diag(cosine_similarity(a[:, j].numpy(), b[:, j].numpy())).mean()
        assert ours[j] == pytest.approx(ref, abs=1e-6)
    assert cosine_per_layer(a, a) == pytest.approx([1.0, 1.0, 1.0])
    assert cosine_per_layer(a, -a) == pytest.approx([-1.0, -1.0, -1.0])


def _member(name: str, group: str, states: torch.Tensor, **swept: int) -> Member:
    return Member(name, group, swept, [0, 1, 2], states)


def test_comparisons_pair_on_shared_sweeps_and_report_mean_and_std_over_seeds() -> None:
    gen = torch.Generator().manual_seed(1)
    rand = lambda: torch.randn(10, 3, 8, generator=gen)  # noqa: E731
    anchor = _member("anchor", "anchor", rand())
    icl = {
        (k, s): _member(f"icl.k{k}.s{s}", "icl", rand(), k=k, seed=s)
        for k in (1, 5)
        for s in (0, 1, 2)
    }
    it = {
        (k, s): _member(f"it.k{k}.s{s}", "it", rand(), k=k, seed=s)
        for k in (1, 5)
        for s in (0, 1, 2)
    }
    members = [anchor, *icl.values(), *it.values()]

    icl_it, warnings = compare_conditions(members, CosineComparison(a="icl", b="it"))
    assert warnings == []
    assert [c.k for c in icl_it] == [1, 5]
    assert icl_it[0].pairs == [[f"icl.k1.s{s}", f"it.k1.s{s}"] for s in range(3)]
    per_seed = np.array([cosine_per_layer(icl[1, s].states, it[1, s].states) for s in range(3)])
    assert icl_it[0].mean == pytest.approx(per_seed.mean(axis=0).tolist())
    assert icl_it[0].std == pytest.approx(per_seed.std(axis=0, ddof=1).tolist())

    # The anchor sweeps nothing: it pairs with every ICL member, grouped by the ICL k.
    anchor_icl, _ = compare_conditions(members, CosineComparison(a="anchor", b="icl"))
    assert [(c.k, len(c.pairs)) for c in anchor_icl] == [(1, 3), (5, 3)]
    assert all(p[0] == "anchor" for c in anchor_icl for p in c.pairs)


def test_cosine_interval_resamples_the_same_queries_in_every_seed_pair() -> None:
    gen = torch.Generator().manual_seed(2)
    shared = torch.randn(40, 3, 8, generator=gen)
    icl = {s: _member(f"icl.k1.s{s}", "icl", shared + torch.randn(40, 3, 8, generator=gen), k=1,
                      seed=s) for s in range(3)}  # fmt: skip
    it = {s: _member(f"it.k1.s{s}", "it", shared + torch.randn(40, 3, 8, generator=gen), k=1,
                     seed=s) for s in range(3)}  # fmt: skip
    boot = BootstrapSpec(n=200, confidence=0.8, seed=9)
    spec = CosineComparison(a="icl", b="it", bootstrap=boot)
    (result,), warnings = compare_conditions([*icl.values(), *it.values()], spec)
    assert warnings == [] and result.ci_low is not None and result.ci_high is not None
    draws = np.random.default_rng(9).integers(0, 40, size=(200, 40))
    for j in range(3):
        per_item = [  # [pairs, queries]
            np.diag(cosine_similarity(icl[s].states[:, j].numpy(), it[s].states[:, j].numpy()))
            for s in range(3)
        ]
        per_resample = [np.mean([c[idx].mean() for c in per_item]) for idx in draws]
        ref = np.quantile(per_resample, [0.1, 0.9])
        assert [result.ci_low[j], result.ci_high[j]] == pytest.approx(ref, rel=1e-6)
        assert result.ci_low[j] < result.mean[j] < result.ci_high[j]  # type: ignore[operator]
        # The mean over seeds varies less than one seed's mean: its interval is narrower.
        one_seed = np.quantile([per_item[0][idx].mean() for idx in draws], [0.1, 0.9])
        assert result.ci_high[j] - result.ci_low[j] < one_seed[1] - one_seed[0]  # type: ignore[operator]


def _result(name: str, values: list[float | None], accuracy: float, **kw: Any) -> ConditionResult:
    curve = LayerCurve(metric="id_twonn", label="TwoNN", layers=[0, 1, 2], values=values)
    behaviour = BehaviourResult(
        accuracy=accuracy, accuracy_norm=accuracy, first_token_accuracy=accuracy, n_items=10,
        options=["a", "b"],
    )  # fmt: skip
    return ConditionResult(name=name, paradigm="icl", n_items=10, layers=[0, 1, 2],
                           curves=[curve], behaviour=behaviour, **kw)  # fmt: skip


def test_seed_aggregates_give_numpy_mean_and_sample_std_per_k() -> None:
    results = [
        _result("zs", [1.0, 2.0, 3.0], 0.5, group="zs", k=0, seed=0),
        _result("icl.k1.s0", [1.0, 2.0, 3.0], 0.6, group="icl", k=1, seed=0),
        _result("icl.k1.s1", [2.0, 4.0, None], 0.8, group="icl", k=1, seed=1),
        _result("icl.k1.s2", [3.0, 9.0, 1.0], 0.7, group="icl", k=1, seed=2),
        _result("icl.k5.s0", [5.0, 5.0, 5.0], 0.9, group="icl", k=5, seed=0),
        _result("icl.k5.s1", [7.0, 5.0, 5.0], 0.9, group="icl", k=5, seed=1),
    ]
    agg = {a.name: a for a in seed_aggregates(results)}
    assert set(agg) == {"icl.k1", "icl.k5"}
    k1 = agg["icl.k1"]
    assert k1.members == ["icl.k1.s0", "icl.k1.s1", "icl.k1.s2"] and k1.k == 1
    curve = k1.curves[0]
    assert curve.values[:2] == pytest.approx([2.0, 5.0]) and curve.values[2] is None
    assert curve.spread is not None and curve.spread[0] == pytest.approx(np.std([1, 2, 3], ddof=1))
    assert k1.accuracy is not None
    assert k1.accuracy.mean == pytest.approx(0.7)
    assert k1.accuracy.std == pytest.approx(np.std([0.6, 0.8, 0.7], ddof=1))


BASE: dict[str, Any] = {"model": {"name": "m"}, "dataset": {"name": "sentiment"}}


def test_seed_and_k_lists_expand_into_named_concrete_conditions() -> None:
    spec = JobSpec.model_validate({**BASE, "conditions": [
        {"name": "icl", "k": [1, 5], "seed": [0, 1], "selection": "fixed"},
        {"paradigm": "sft", "name": "it", "train_on": "demos", "k": 2, "seed": [3, 4]},
    ]})  # fmt: skip
    icl, it = (c.expand() for c in spec.conditions)
    assert [c.name for c in icl] == ["icl.k1.s0", "icl.k1.s1", "icl.k5.s0", "icl.k5.s1"]
    assert icl[2].swept == {"k": 5, "seed": 0} and icl[2].group == "icl"
    assert [(c.name, c.swept) for c in it] == [("it.s3", {"seed": 3}), ("it.s4", {"seed": 4})]
    assert it[0].training_recipe()["seed"] == 3 and it[0].training_recipe()["k"] == 2
    # The names the spec validator checks without building the conditions are the same.
    names = [c.expanded_names() for c in spec.conditions]
    assert names == [[c.name for c in icl], [c.name for c in it]]


@pytest.mark.parametrize(
    ("conditions", "extra", "message"),
    [
        ([{"name": "a", "paradigm": "rl"}], {}, "paradigm must be one of 'icl', 'sft'"),
        ([{"name": "s", "paradigm": "sft", "k": 3}], {}, "k applies to train_on='demos'"),
        ([{"name": "s", "paradigm": "sft", "train_on": "demos"}], {}, "needs k >= 1"),
        ([{"name": "s", "paradigm": "sft", "checkpoints": [5, 5]}], {}, "same step twice"),
        ([{"name": "s", "paradigm": "sft", "lora": {"r": 0}}], {}, "greater than or equal to 1"),
        ([{"name": "a", "seed": [1, 1]}], {}, "seed lists the same value twice"),
        ([{"name": "a"}], {"comparisons": [{"a": "a", "b": "b"}]}, "names no condition 'b'"),
    ],
)
def test_bad_condition_specs_are_rejected_with_a_message(
    conditions: list[dict[str, Any]], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        JobSpec.model_validate({**BASE, "conditions": conditions, **extra})


def test_a_swept_result_name_may_not_collide_with_another_condition() -> None:
    with pytest.raises(ValidationError, match=r"repeated: icl\.k1\.s0"):
        JobSpec.model_validate({**BASE, "conditions": [
            {"name": "icl", "k": [1, 2], "seed": [0, 1]}, {"name": "icl.k1.s0"},
        ]})  # fmt: skip


def test_a_checkpoint_result_name_may_not_collide_with_another_condition() -> None:
    with pytest.raises(ValidationError, match=r"repeated: sft\.step5"):
        JobSpec.model_validate({**BASE, "conditions": [
            {"paradigm": "sft", "name": "sft", "checkpoints": [5]}, {"name": "sft.step5"},
        ]})  # fmt: skip
