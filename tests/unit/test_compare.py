"""Comparisons between conditions: pairing (seeds, checkpoints), mean and spread, null layers."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from references import copy_free_ari, copy_free_cka

from reprlab.schemas.metrics import (
    BootstrapSpec,
    CkaComparison,
    CosineComparison,
    DataOverlapComparison,
    PartitionAriComparison,
    RsaComparison,
)
from reprlab.schemas.results import ComparisonResult
from reprlab.worker.aggregate import Member, compare_conditions
from reprlab.worker.metrics.bootstrap import rsa_bootstrap
from reprlab.worker.metrics.cka import linear_cka
from reprlab.worker.metrics.rsa import compare_rdms, rdm, standardise

LAYERS = [0, 1, 2]


def _states(seed: int, n: int = 60) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    blobs = torch.randn(4, 8, generator=gen) * 6
    x = blobs[torch.arange(n) % 4] + torch.randn(n, 8, generator=gen)
    return torch.stack([x @ torch.randn(8, 16, generator=gen) for _ in LAYERS], dim=1)


def _member(name: str, group: str, data: int, step: int | None = None, **swept: int) -> Member:
    return Member(name, group, swept, LAYERS, _states(data), step=step)


def test_steps_compare_with_each_checkpoint_and_otherwise_only_the_final_weights() -> None:
    members = [
        _member("base", "base", 0),
        _member("sft", "sft", 1),
        _member("sft.step5", "sft", 2, step=5),
        _member("sft.step10", "sft", 3, step=10),
    ]
    final, _ = compare_conditions(members, CosineComparison(a="base", b="sft"))
    assert [(c.step, c.pairs) for c in final] == [(None, [["base", "sft"]])]
    steps, _ = compare_conditions(members, CosineComparison(a="base", b="sft", steps=True))
    assert [(c.step, c.pairs) for c in steps] == [
        (5, [["base", "sft.step5"]]),
        (10, [["base", "sft.step10"]]),
    ]


def test_cka_and_rsa_over_seeds_are_the_mean_and_std_of_direct_calls() -> None:
    members = [_member(f"a.s{s}", "a", s, seed=s) for s in (0, 1, 2)]
    members += [_member(f"b.s{s}", "b", 10 + s, seed=s) for s in (0, 1, 2)]
    (cka,), warnings = compare_conditions(members, CkaComparison(metric="cka", a="a", b="b",
                                                                 debiased=True))  # fmt: skip
    assert warnings == [] and cka.label == "CKA, linear, debiased" and cka.k is None
    per_seed = np.array([
        [linear_cka(_states(s)[:, j].double().numpy(), _states(10 + s)[:, j].double().numpy(),
                    debiased=True) for j in range(3)]
        for s in (0, 1, 2)
    ])  # fmt: skip
    assert cka.mean == pytest.approx(per_seed.mean(axis=0).tolist())
    assert cka.std == pytest.approx(per_seed.std(axis=0, ddof=1).tolist())

    (rsa,), _ = compare_conditions(members[::3], RsaComparison(metric="rsa", a="a", b="b"))
    assert rsa.pairs == [["a.s0", "b.s0"]]
    for j in range(3):
        x, y = _states(0)[:, j].double().numpy(), _states(10)[:, j].double().numpy()
        ref = compare_rdms(rdm(standardise(x), "cosine"), rdm(standardise(y), "cosine"), "spearman")
        assert rsa.mean[j] == pytest.approx(ref)


def test_identical_states_overlap_fully_and_share_their_partition() -> None:
    members = [_member("a", "a", 0), _member("b", "b", 0)]
    spec = DataOverlapComparison(metric="data_overlap", a="a", b="b", ks=[5, 10])
    chi, _ = compare_conditions(members, spec)
    assert [c.params for c in chi] == [{"k": 5}, {"k": 10}]
    assert all(v == pytest.approx(1.0) for c in chi for v in c.mean)
    spec_ari = PartitionAriComparison(metric="partition_ari", a="a", b="b", density_k=4)
    (ari,), _ = compare_conditions(members, spec_ari)
    assert ari.mean == pytest.approx([1.0, 1.0, 1.0])


def test_an_undefined_layer_is_null_with_its_reason_not_a_failed_job() -> None:
    a, b = _states(0), _states(1)
    a[:, 0, :] = 1.0  # a constant layer: CKA and RSA are undefined there
    members = [Member("a", "a", {}, LAYERS, a), Member("b", "b", {}, LAYERS, b)]
    (cka,), warnings = compare_conditions(members, CkaComparison(metric="cka", a="a", b="b"))
    assert cka.mean[0] is None and cka.std[0] is None
    assert cka.mean[1] is not None and any(w.startswith("a vs b: layer 0:") for w in warnings)
    chi, warnings = compare_conditions(
        members, DataOverlapComparison(metric="data_overlap", a="a", b="b", ks=[5, 60])
    )
    assert chi[0].mean[0] is None and chi[0].mean[1] is not None  # one distinct point at layer 0
    assert chi[1].mean == [None, None, None]  # k=60 needs more than the 60 queries
    assert any("k=60 needs more than 60 queries" in w for w in warnings)


# --- bootstrap intervals of the mean over pairs ---------------------------------------------------

BOOT = BootstrapSpec(n=200, confidence=0.9, seed=3)


def _draws(n: int, boot: BootstrapSpec = BOOT) -> npt.NDArray[np.int64]:
    """The resamples of the n queries every pair uses: numpy's default generator, as seeded."""
    return np.random.default_rng(boot.seed).integers(0, n, size=(boot.n, n))


def _quantiles(per_resample: npt.ArrayLike, boot: BootstrapSpec = BOOT) -> tuple[float, float]:
    alpha = (1 - boot.confidence) / 2
    low, high = np.quantile(np.asarray(per_resample), [alpha, 1 - alpha])
    return float(low), float(high)


def _ci(result: ComparisonResult, j: int) -> tuple[float | None, float | None]:
    assert result.ci_low is not None and result.ci_high is not None
    return result.ci_low[j], result.ci_high[j]


def _holds_mean(result: ComparisonResult) -> None:
    for j, mean in enumerate(result.mean):
        low, high = _ci(result, j)
        assert mean is not None and low is not None and high is not None
        assert low <= mean <= high


def _seeded_pairs(seeds: tuple[int, ...], n: int = 60) -> list[Member]:
    members = [Member(f"a.s{s}", "a", {"seed": s}, LAYERS, _states(s, n)) for s in seeds]
    return members + [
        Member(f"b.s{s}", "b", {"seed": s}, LAYERS, _states(10 + s, n)) for s in seeds
    ]


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_interval_is_of_the_mean_over_seeds_of_copy_free_cka_on_resampled_queries(
    debiased: bool,
) -> None:
    # 12 queries, so that the brute-force reference (all 4-tuples of draws) stays small.
    members = _seeded_pairs((0, 1), n=12)
    spec = CkaComparison(metric="cka", a="a", b="b", debiased=debiased, bootstrap=BOOT)
    (cka,), warnings = compare_conditions(members, spec)
    assert warnings == []
    for j in range(3):
        xy = [(_states(s, 12)[:, j].double().numpy(), _states(10 + s, 12)[:, j].double().numpy())
              for s in (0, 1)]  # fmt: skip
        per_resample = [
            np.mean([copy_free_cka(x, y, idx, debiased) for x, y in xy]) for idx in _draws(12)
        ]
        assert _ci(cka, j) == pytest.approx(_quantiles(per_resample), rel=1e-9)
    _holds_mean(cka)
    (again,), _ = compare_conditions(members, spec)
    assert again.ci_low == cka.ci_low and again.ci_high == cka.ci_high
    other = spec.model_copy(update={"bootstrap": BootstrapSpec(n=200, confidence=0.9, seed=4)})
    (moved,), _ = compare_conditions(members, other)
    assert moved.ci_low != cka.ci_low and moved.mean == cka.mean
    (plain,), _ = compare_conditions(members, spec.model_copy(update={"bootstrap": None}))
    assert plain.ci_low is None and plain.ci_high is None


def test_rsa_comparison_interval_is_rsa_bootstrap_of_the_two_rdms() -> None:
    members = _seeded_pairs((0,), n=30)
    spec = RsaComparison(metric="rsa", a="a", b="b", bootstrap=BOOT)
    (rsa,), _ = compare_conditions(members, spec)
    for j in range(3):
        x, y = _states(0, 30)[:, j].double().numpy(), _states(10, 30)[:, j].double().numpy()
        ra, rb = rdm(standardise(x), "cosine"), rdm(standardise(y), "cosine")
        ref = rsa_bootstrap(ra, rb, "spearman", n_boot=BOOT.n, confidence=BOOT.confidence,
                            seed=BOOT.seed)  # fmt: skip
        assert _ci(rsa, j) == ref
    _holds_mean(rsa)


def _overlaps_by_hand(x: npt.NDArray[Any], y: npt.NDArray[Any], k: int) -> npt.NDArray[Any]:
    """Per query: the shared fraction of k nearest neighbours (sklearn), on the queries distinct
    in both x and y; NaN for the others."""
    from sklearn.neighbors import NearestNeighbors

    keep = np.intersect1d(np.unique(x, axis=0, return_index=True)[1],
                          np.unique(y, axis=0, return_index=True)[1])  # fmt: skip
    near = [
        NearestNeighbors(n_neighbors=k + 1).fit(z[keep]).kneighbors(z[keep])[1][:, 1:]
        for z in (x, y)
    ]
    out = np.full(x.shape[0], np.nan)
    out[keep] = [len(set(p) & set(q)) / k for p, q in zip(*near, strict=True)]
    return out


def test_data_overlap_interval_resamples_queries_and_leaves_out_duplicates() -> None:
    members = _seeded_pairs((0, 1))
    for m in members[:2]:
        m.states[:, 0, :] = 1.0  # layer 0 of a: one distinct point, no value
    members[0].states[5, 1, :] = members[0].states[9, 1, :]  # layer 1 of a.s0: a duplicate
    members[3].states[20, 2, :] = members[3].states[7, 2, :]  # layer 2 of b.s1: another
    spec = DataOverlapComparison(metric="data_overlap", a="a", b="b", ks=[5, 60], bootstrap=BOOT)
    (chi, too_big), _ = compare_conditions(members, spec)
    assert chi.mean[0] is None and _ci(chi, 0) == (None, None)
    assert too_big.ci_low == [None] * 3 and too_big.ci_high == [None] * 3
    draws = _draws(60)
    for j in (1, 2):
        per_pair = [
            _overlaps_by_hand(
                members[p].states[:, j].numpy(), members[2 + p].states[:, j].numpy(), 5
            )
            for p in (0, 1)
        ]
        assert chi.mean[j] == pytest.approx(np.mean([np.nanmean(o) for o in per_pair]))
        per_resample = [np.mean([np.nanmean(o[idx]) for o in per_pair]) for idx in draws]
        assert _ci(chi, j) == pytest.approx(_quantiles(per_resample), rel=1e-12)
        low, high = _ci(chi, j)
        assert low is not None and high is not None and low <= chi.mean[j] <= high


def test_partition_ari_interval_resamples_the_fixed_partitions() -> None:
    from sklearn.metrics import adjusted_rand_score

    from reprlab.worker.metrics.knn import knn_graph
    from reprlab.worker.metrics.suite import landscape_clusters, landscape_needs

    # b: a's blobs with 24 queries shuffled among them, so the partitions partly disagree.
    a = _states(0)
    b = a.clone()
    b[:24] = a[torch.randperm(24, generator=torch.Generator().manual_seed(1))]
    b += torch.randn(60, 3, 16, generator=torch.Generator().manual_seed(2)) * 0.5
    members = [Member("a", "a", {}, LAYERS, a), Member("b", "b", {}, LAYERS, b)]
    spec = PartitionAriComparison(metric="partition_ari", a="a", b="b", density_k=4,
                                  bootstrap=BOOT)  # fmt: skip
    (ari,), _ = compare_conditions(members, spec)
    need = landscape_needs(4, "gride", 100, 60)
    for j in range(3):
        labels = [
            landscape_clusters(knn_graph(x[:, j], need), 4, "gride", 1.6, False, 100)[0].labels
            for x in (a, b)
        ]
        assert ari.mean[j] == pytest.approx(adjusted_rand_score(*labels))
        assert 0.3 < ari.mean[j] < 0.8
        per_resample = [copy_free_ari(*labels, idx) for idx in _draws(60)]
        assert _ci(ari, j) == pytest.approx(_quantiles(per_resample), rel=1e-12)
    _holds_mean(ari)


def test_resampled_ari_leaves_out_copies_and_unlabelled_items() -> None:
    from reprlab.worker.metrics.bootstrap import ari_statistic

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, size=50), (rng.integers(0, 3, size=50) + rng.integers(0, 2, size=50))
    a[[3, 17]] = -1  # two items left out
    idx = rng.integers(0, 50, size=(30, 50))
    ours = np.asarray(ari_statistic(a, b)(idx))
    np.testing.assert_allclose(ours, [copy_free_ari(a, b, i) for i in idx], rtol=1e-12)
    assert np.asarray(ari_statistic(b, b)(idx)).tolist() == [1.0] * 30
