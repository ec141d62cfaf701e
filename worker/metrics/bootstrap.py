"""Percentile bootstrap confidence intervals: the nearest-neighbour ID estimators, and RSA.

Resampling points with replacement would put duplicate points in the data, and a duplicate is
its copy's nearest neighbour at distance 0: TwoNN, Gride and the MLE break down. Each estimator
instead aggregates one quantity per point, computed once on the real neighbours (TwoNN's
log(r2/r1), Gride's r_n2/r_n1, the MLE's per-point inverse estimate), so the bootstrap
resamples those quantities and re-runs the estimator's aggregation on every resample (TwoNN's
sort-and-fit, Gride's filter and likelihood, the MLE's average). Like the estimators' standard
errors, this treats the points' quantities as independent, which neighbouring points' shared
neighbours make them only approximately.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.intrinsic_dim import (
    MleAverage,
    gride_fit,
    gride_ratios,
    mle_average,
    mle_inverses,
    twonn_fit,
    twonn_ratios,
)
from reprlab.worker.metrics.knn import KnnGraph
from reprlab.worker.metrics.rsa import CompareMethod, correlate

FloatArray = npt.NDArray[np.float64]
# Resampled values held at once (resamples x points), to bound memory.
_BATCH_ELEMENTS = 1 << 22


def bootstrap_ci(
    values: npt.ArrayLike,
    statistic: Callable[[FloatArray], npt.ArrayLike],
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over per-point `values`.

    Args:
        values: [N] the per-point quantities the statistic aggregates.
        statistic: maps a batch of resamples [b, N] to their statistics [b].
        n_boot: number of resamples (each N values drawn with replacement).
        confidence: coverage of the interval, in (0, 1).
        seed: seed of the resampling (numpy's default generator): same seed, same interval.

    Returns:
        (low, high): the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the resampled
        statistics.

    Raises:
        MetricError: bad arguments, no values, or a statistic undefined on some resample.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise MetricError(f"bootstrap needs a non-empty 1-D array of values, got {x.shape}")
    if n_boot < 1:
        raise MetricError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise MetricError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH_ELEMENTS // x.size)
    stats = np.concatenate(
        [
            np.asarray(statistic(x[rng.integers(0, x.size, size=(min(batch, n_boot - s), x.size))]))
            for s in range(0, n_boot, batch)
        ]
    )
    if not np.all(np.isfinite(stats)):
        raise MetricError(
            f"bootstrap: the estimator is undefined on {int(np.sum(~np.isfinite(stats)))} of "
            f"{n_boot} resamples",
            hint="analyse more distinct points",
        )
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def twonn_bootstrap(
    graph: KnnGraph,
    discard_fraction: float = 0.1,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of `twonn(graph, discard_fraction)`: resamples log(r2/r1)."""
    log_mu = twonn_ratios(graph)
    twonn_fit(log_mu, discard_fraction)  # parameter errors before resampling
    return bootstrap_ci(
        log_mu,
        lambda sample: twonn_fit(sample, discard_fraction),
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
    )


def gride_bootstrap(
    graph: KnnGraph,
    n1: int,
    n2: int,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of `gride(graph, n1, n2)`: resamples r_n2/r_n1."""
    return bootstrap_ci(
        gride_ratios(graph, n1, n2),
        lambda sample: gride_fit(sample, n1, n2),
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
    )


def mle_bootstrap(
    graph: KnnGraph,
    k: int,
    average: MleAverage = "estimates",
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of `mle(graph, k, average)`: resamples the per-point inverses."""
    inverses = mle_inverses(graph, k)
    mle_average(inverses, average)  # parameter errors before resampling
    return bootstrap_ci(
        inverses,
        lambda sample: mle_average(sample, average),
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
    )


def rsa_bootstrap(
    model: npt.ArrayLike,
    hypothesis: npt.ArrayLike,
    method: CompareMethod,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of an RDM comparison, resampling items.

    Each resample draws n items with replacement (numpy's default generator, `seed`) and
    compares the two RDMs on the pairs of resampled items that are different items: a pair of
    copies of one item has dissimilarity 0 in both RDMs by construction and is left out (the
    pattern bootstrap of rsatoolbox's `bootstrap_sample_pattern` does the same). Costs n_boot
    comparisons of about n(n-1)/2 pairs each.

    Args:
        model, hypothesis: condensed RDMs of the same n items (scipy `squareform` order).
        method: as `rsa.compare_rdms`.

    Raises:
        MetricError: RDMs of different lengths, bad arguments, or a comparison undefined on
            more than 1% of the resamples (e.g. a hypothesis that is constant on most of them).
    """
    a = np.asarray(model, dtype=np.float64)
    b = np.asarray(hypothesis, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise MetricError(f"RDMs of shapes {a.shape} and {b.shape} cannot be compared")
    n = int(round((1 + np.sqrt(1 + 8 * a.size)) / 2))
    if n * (n - 1) // 2 != a.size or n < 3:
        raise MetricError(f"{a.size} is not the length of a condensed RDM of 3 or more items")
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise MetricError(f"need n_boot >= 1 and confidence in (0, 1); got {n_boot}, {confidence}")
    rng = np.random.default_rng(seed)
    upper = np.triu_indices(n, k=1)
    stats, failed = [], 0
    for _ in range(n_boot):
        items = rng.integers(0, n, size=n)
        i, j = items[upper[0]], items[upper[1]]
        keep = i != j
        lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
        pos = n * lo - lo * (lo + 1) // 2 + (hi - lo - 1)
        try:
            stats.append(correlate(a[pos], b[pos], method))
        except MetricError:
            failed += 1
    if failed > n_boot // 100:
        raise MetricError(
            f"bootstrap: the RDM comparison is undefined on {failed} of {n_boot} resamples",
            hint="analyse more items, or a hypothesis with more than one level",
        )
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(stats), [alpha, 1.0 - alpha])
    return float(low), float(high)
