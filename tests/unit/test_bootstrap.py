"""Bootstrap intervals of the ID estimators: coverage where the truth is known, agreement with
the estimators and their standard errors, shrinking with N, and determinism for a seed."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest
import torch

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.bootstrap import (
    bootstrap_ci,
    gride_bootstrap,
    mle_bootstrap,
    twonn_bootstrap,
)
from reprlab.worker.metrics.intrinsic_dim import MleAverage, gride, mle, twonn, twonn_fit
from reprlab.worker.metrics.knn import KnnGraph, knn_graph

Interval = Callable[..., tuple[float, float]]


def _gaussian_graph(n: int, seed: int) -> KnnGraph:
    """kNN graph (k=16) of n points of a 5-D standard Gaussian embedded in 60 dims."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 5)) @ rng.normal(size=(5, 60))).astype(np.float32)
    return knn_graph(torch.from_numpy(x), 16)


@pytest.fixture(scope="module")
def small() -> KnnGraph:
    return _gaussian_graph(500, seed=0)


@pytest.fixture(scope="module")
def large() -> KnnGraph:
    return _gaussian_graph(4000, seed=1)


def _coverage(hits: list[bool]) -> float:
    return sum(hits) / len(hits)


def test_percentile_interval_covers_a_true_mean_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    hits = []
    for seed in range(300):
        values = rng.exponential(size=100)  # true mean 1, skewed
        low, high = bootstrap_ci(values, lambda s: s.mean(axis=1), n_boot=400, seed=seed)
        hits.append(low <= 1.0 <= high)
    # 95% nominal; the percentile interval of a skewed mean at N = 100 under-covers a little.
    assert 0.9 <= _coverage(hits) <= 0.985


@pytest.mark.parametrize("discard", [0.0, 0.1])
def test_twonn_interval_covers_the_dimension_of_exact_pareto_ratios(discard: float) -> None:
    # TwoNN's model: mu = r2/r1 is Pareto with exponent d, i.e. log mu ~ Exponential(rate d).
    rng = np.random.default_rng(1)
    d = 4.0
    hits = []
    for seed in range(200):
        log_mu = rng.exponential(scale=1 / d, size=400)
        low, high = bootstrap_ci(
            log_mu, lambda s: twonn_fit(s, discard), n_boot=400, confidence=0.9, seed=seed
        )
        hits.append(low <= d <= high)
    assert 0.83 <= _coverage(hits) <= 0.96


@pytest.mark.parametrize(
    ("interval", "estimate"),
    [
        (lambda g, **kw: twonn_bootstrap(g, 0.1, **kw), lambda g: twonn(g, 0.1).value),
        (lambda g, **kw: twonn_bootstrap(g, 0.0, **kw), lambda g: twonn(g, 0.0).value),
        (lambda g, **kw: gride_bootstrap(g, 4, 8, **kw), lambda g: gride(g, 4, 8).value),
        (lambda g, **kw: mle_bootstrap(g, 15, **kw), lambda g: mle(g, 15).value),
        (
            lambda g, **kw: mle_bootstrap(g, 15, "inverses", **kw),
            lambda g: mle(g, 15, "inverses").value,
        ),
    ],
    ids=["twonn", "twonn-ml", "gride", "mle", "mle-inverses"],
)
def test_interval_holds_the_estimate_shrinks_with_n_and_repeats_for_a_seed(
    small: KnnGraph,
    large: KnnGraph,
    interval: Interval,
    estimate: Callable[[KnnGraph], float],
) -> None:
    widths = []
    for g in (small, large):
        low, high = interval(g, n_boot=500, seed=3)
        assert low < estimate(g) < high
        assert 4.0 < low and high < 7.0  # a 5-D manifold, up to the estimators' biases
        widths.append(high - low)
    # The width goes as 1/sqrt(N): 8 times the points, about 0.35 times the width.
    assert 0.2 < widths[1] / widths[0] < 0.55
    assert interval(small, n_boot=500, seed=3) == interval(small, n_boot=500, seed=3)
    assert interval(small, n_boot=500, seed=4) != interval(small, n_boot=500, seed=3)


@pytest.mark.parametrize("average", ["estimates", "inverses"])
def test_mle_interval_agrees_with_the_standard_error(large: KnnGraph, average: MleAverage) -> None:
    est = mle(large, 15, average)
    low, high = mle_bootstrap(large, 15, average, n_boot=2000, seed=0)
    assert est.error is not None
    assert (high - low) / 2 == pytest.approx(1.96 * est.error, rel=0.15)


def test_a_wider_confidence_gives_a_wider_interval(small: KnnGraph) -> None:
    low90, high90 = twonn_bootstrap(small, n_boot=1000, confidence=0.9, seed=0)
    low99, high99 = twonn_bootstrap(small, n_boot=1000, confidence=0.99, seed=0)
    assert low99 < low90 < high90 < high99


def test_bootstrap_refuses_bad_arguments(small: KnnGraph) -> None:
    values: npt.NDArray[np.float64] = np.ones(10)

    def mean(s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return s.mean(axis=1)

    with pytest.raises(MetricError, match="n_boot must be >= 1"):
        bootstrap_ci(values, mean, n_boot=0)
    with pytest.raises(MetricError, match=r"confidence must be in \(0, 1\)"):
        bootstrap_ci(values, mean, confidence=1.0)
    with pytest.raises(MetricError, match="non-empty 1-D"):
        bootstrap_ci(np.ones(0), mean)
    with pytest.raises(MetricError, match="undefined on 200 of 200 resamples"):
        bootstrap_ci(values, lambda s: np.full(s.shape[0], np.nan), n_boot=200)
    with pytest.raises(MetricError, match="discard_fraction"):
        twonn_bootstrap(small, 1.0)
    with pytest.raises(MetricError, match="1 <= n1 < n2"):
        gride_bootstrap(small, 8, 8)
    with pytest.raises(MetricError, match="average must be"):
        mle_bootstrap(small, 10, cast(MleAverage, "median"))


def test_resamples_come_in_batches_without_changing_the_interval(
    small: KnnGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reprlab.worker.metrics.bootstrap as bootstrap_module

    whole = twonn_bootstrap(small, n_boot=300, seed=5)
    monkeypatch.setattr(bootstrap_module, "_BATCH_ELEMENTS", 500 * 7)  # 7 resamples a batch
    # Same resamples, so the same interval; batched sums may differ in the last bit.
    assert twonn_bootstrap(small, n_boot=300, seed=5) == pytest.approx(whole, rel=1e-12)
    assert not math.isnan(whole[0])


# --- RSA: resampling items, pairs of copies left out ---------------------------------------------


def _rsa_reference(model, hyp, method, n_boot, confidence, seed):  # type: ignore[no-untyped-def]
    """The same resampling spelled out on square matrices."""
    from scipy.spatial.distance import squareform

    from reprlab.worker.metrics.rsa import correlate

    sa, sb = squareform(model), squareform(hyp)
    n = sa.shape[0]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        items = rng.integers(0, n, size=n)
        va, vb = [], []
        for p in range(n):
            for q in range(p + 1, n):
                if items[p] != items[q]:
                    va.append(sa[items[p], items[q]])
                    vb.append(sb[items[p], items[q]])
        stats.append(correlate(np.array(va), np.array(vb), method))
    alpha = (1 - confidence) / 2
    return tuple(np.quantile(stats, [alpha, 1 - alpha]))


@pytest.mark.parametrize("method", ["spearman", "kendall_tau_a", "pearson"])
def test_rsa_bootstrap_equals_the_spelled_out_resampling(method: str) -> None:
    from reprlab.worker.metrics.bootstrap import rsa_bootstrap
    from reprlab.worker.metrics.rsa import categorical_rdm, compare_rdms, rdm

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=24)
    x = rng.normal(size=(24, 6)) + labels[:, None]
    model, hyp = rdm(x, "cosine"), categorical_rdm(labels.tolist())
    ours = rsa_bootstrap(model, hyp, method, n_boot=60, confidence=0.9, seed=5)  # type: ignore[arg-type]
    ref = _rsa_reference(model, hyp, method, 60, 0.9, 5)
    assert ours == pytest.approx(ref, abs=1e-12)
    est = compare_rdms(model, hyp, method)  # type: ignore[arg-type]
    assert ours[0] <= est <= ours[1]
    assert rsa_bootstrap(model, hyp, method, n_boot=60, confidence=0.9, seed=5) == ours  # type: ignore[arg-type]


def test_rsa_bootstrap_refuses_mismatched_rdms() -> None:
    from reprlab.worker.metrics.bootstrap import rsa_bootstrap

    with pytest.raises(MetricError, match="cannot be compared"):
        rsa_bootstrap(np.ones(6), np.ones(10), "spearman")
    with pytest.raises(MetricError, match="not the length of a condensed RDM"):
        rsa_bootstrap(np.arange(5.0), np.arange(5.0), "spearman")
