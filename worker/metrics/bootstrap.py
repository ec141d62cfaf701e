"""Percentile bootstrap confidence intervals of per-layer scalars.

One engine: `resample_statistics` draws resamples of n items with replacement (numpy's default
generator seeded with `seed`; the same n, n_boot and seed give the same draws wherever they
are made) and evaluates a statistic of item indices on each; `percentile_interval` takes the
quantiles. `bootstrap_ci` is the engine on per-item values.

Resampling points with replacement would put duplicate points in the data, and a duplicate is
its copy's nearest neighbour at distance 0: TwoNN, Gride, the MLE and the label overlap break
down. Each of them instead aggregates one quantity per point, computed once on the real
neighbours (TwoNN's log(r2/r1), Gride's r_n2/r_n1, the MLE's per-point inverse estimate, the
fraction of neighbours sharing the point's label), so the bootstrap resamples those quantities
and re-runs the estimator's aggregation on every resample. Like the estimators' standard
errors, this treats the points' quantities as independent, which neighbouring points' shared
neighbours make them only approximately.

The statistics of item indices (`mean_statistic`, `ratio_statistic`, `class_mean_statistic`
below; `ari_statistic`, `cka_statistic`, `rdm_statistic` of pairs of items in
`bootstrap_pairs`, re-exported here) serve the attention ratio and the comparisons: two
conditions' states of the same queries are resampled together, query by query, and every pair
of conditions of one comparison draws the same resamples, so the mean over pairs can be
resampled too. A statistic returns NaN on a resample where it is undefined. `rsa_bootstrap` is
the interval of an RDM comparison on `rdm_statistic`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.bootstrap_pairs import (
    ari_statistic,
    cka_statistic,
    rdm_items,
    rdm_statistic,
)
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
from reprlab.worker.metrics.landscape import Labels, label_overlaps
from reprlab.worker.metrics.rsa import CompareMethod

__all__ = [
    "MAX_UNDEFINED",
    "Statistic",
    "ari_statistic",
    "bootstrap_ci",
    "class_mean_statistic",
    "cka_statistic",
    "gride_bootstrap",
    "label_overlap_bootstrap",
    "mean_statistic",
    "mle_bootstrap",
    "percentile_interval",
    "ratio_statistic",
    "rdm_items",
    "rdm_statistic",
    "resample_ci",
    "resample_statistics",
    "rsa_bootstrap",
    "twonn_bootstrap",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# Maps item indices [b, n] of b resamples to their statistics [b] (NaN: undefined there).
Statistic = Callable[[IntArray], npt.ArrayLike]
# Resampled values held at once (resamples x points), to bound memory.
_BATCH_ELEMENTS = 1 << 22
# Resamples of items a statistic may be undefined on (left out) before the interval is.
MAX_UNDEFINED = 0.01


def resample_statistics(n: int, statistic: Statistic, *, n_boot: int, seed: int) -> FloatArray:
    """`statistic` on n_boot resamples of n items drawn with replacement.

    Args:
        n: number of items; a resample is n item indices in [0, n).
        statistic: maps a batch of resamples [b, n] (int64 indices) to their statistics [b].
        n_boot: number of resamples.
        seed: seed of numpy's default generator; the draws depend only on (n, n_boot, seed).

    Returns:
        [n_boot] float64, NaN where the statistic is undefined.
    """
    if n < 1:
        raise MetricError(f"bootstrap needs at least one item, got {n}")
    if n_boot < 1:
        raise MetricError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH_ELEMENTS // n)
    return np.concatenate(
        [
            np.asarray(
                statistic(rng.integers(0, n, size=(min(batch, n_boot - s), n))), dtype=np.float64
            )
            for s in range(0, n_boot, batch)
        ]
    )


def percentile_interval(
    stats: npt.ArrayLike,
    confidence: float,
    *,
    max_undefined: float = 0.0,
    what: str = "the estimator",
    hint: str = "analyse more distinct points",
) -> tuple[float, float]:
    """The (1 - confidence)/2 and (1 + confidence)/2 quantiles of resampled statistics.

    Undefined (non-finite) statistics are left out when they are at most `max_undefined` of
    the resamples.

    Raises:
        MetricError: confidence outside (0, 1), or more undefined resamples than allowed.
    """
    if not 0.0 < confidence < 1.0:
        raise MetricError(f"confidence must be in (0, 1), got {confidence}")
    s = np.asarray(stats, dtype=np.float64)
    finite = np.isfinite(s)
    undefined = int(s.size - finite.sum())
    if undefined > max_undefined * s.size or undefined == s.size:
        raise MetricError(
            f"bootstrap: {what} is undefined on {undefined} of {s.size} resamples", hint=hint
        )
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(s[finite], [alpha, 1.0 - alpha])
    return float(low), float(high)


def resample_ci(
    n: int,
    statistic: Statistic,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    max_undefined: float = MAX_UNDEFINED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic of n items (`resample_statistics`)."""
    stats = resample_statistics(n, statistic, n_boot=n_boot, seed=seed)
    return percentile_interval(stats, confidence, max_undefined=max_undefined)


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
    if not 0.0 < confidence < 1.0:
        raise MetricError(f"confidence must be in (0, 1), got {confidence}")
    stats = resample_statistics(x.size, lambda idx: statistic(x[idx]), n_boot=n_boot, seed=seed)
    return percentile_interval(stats, confidence)


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


def label_overlap_bootstrap(
    graph: KnnGraph,
    labels: Labels,
    *,
    k: int | None = None,
    class_fraction: float | None = None,
    class_balanced: bool = False,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of `landscape.label_overlap` (same arguments): resamples the points'
    overlaps, each with its label, and averages them as the estimator does (class-balanced:
    the mean over the classes in the resample of each class's mean overlap)."""
    overlaps, codes = label_overlaps(graph, labels, k=k, class_fraction=class_fraction)
    statistic = (
        class_mean_statistic(overlaps, codes) if class_balanced else mean_statistic(overlaps)
    )
    stats = resample_statistics(overlaps.size, statistic, n_boot=n_boot, seed=seed)
    return percentile_interval(stats, confidence)


def rsa_bootstrap(
    model: npt.ArrayLike,
    hypothesis: npt.ArrayLike,
    method: CompareMethod,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of an RDM comparison, resampling items (`rdm_statistic`).

    Each resample draws n items with replacement (numpy's default generator, `seed`) and
    compares the two RDMs on the pairs of resampled items that are different items. Costs
    n_boot comparisons of about n(n-1)/2 pairs each.

    Args:
        model, hypothesis: condensed RDMs of the same n items (scipy `squareform` order).
        method: as `rsa.compare_rdms`.

    Raises:
        MetricError: RDMs of different lengths, bad arguments, or a comparison undefined on
            more than 1% of the resamples (e.g. a hypothesis that is constant on most of them).
    """
    statistic = rdm_statistic(model, hypothesis, method)
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise MetricError(f"need n_boot >= 1 and confidence in (0, 1); got {n_boot}, {confidence}")
    n = rdm_items(np.asarray(model).size)
    stats = resample_statistics(n, statistic, n_boot=n_boot, seed=seed)
    return percentile_interval(
        stats,
        confidence,
        max_undefined=MAX_UNDEFINED,
        what="the RDM comparison",
        hint="analyse more items, or a hypothesis with more than one level",
    )


# --- statistics of item indices ------------------------------------------------------------------


def mean_statistic(values: npt.ArrayLike) -> Statistic:
    """Mean of per-item values on each resample; a NaN marks an item left out (e.g. not a
    distinct point), which the resample's mean skips (NaN if it drew no other item)."""
    v = np.asarray(values, dtype=np.float64)
    present = np.isfinite(v)
    if present.all():
        return lambda idx: v[idx].mean(axis=1)
    filled = np.where(present, v, 0.0)
    weight = present.astype(np.float64)

    def statistic(idx: IntArray) -> FloatArray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(filled[idx].sum(axis=1) / weight[idx].sum(axis=1))

    return statistic


def ratio_statistic(numerator: npt.ArrayLike, denominator: npt.ArrayLike) -> Statistic:
    """Sum of the items' numerators over the sum of their denominators on each resample (NaN
    where that sum is not positive)."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)

    def statistic(idx: IntArray) -> FloatArray:
        top, bottom = num[idx].sum(axis=1), den[idx].sum(axis=1)
        ok = bottom > 0
        return np.divide(top, bottom, out=np.full(top.shape, np.nan), where=ok)

    return statistic


def class_mean_statistic(values: npt.ArrayLike, codes: npt.ArrayLike) -> Statistic:
    """Mean over the classes drawn of each class's mean value, on each resample.

    Args:
        values: [n] per-item values.
        codes: [n] int class codes 0..c-1 of the items.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(codes, dtype=np.int64)
    n_classes = int(c.max()) + 1

    def statistic(idx: IntArray) -> FloatArray:
        b = idx.shape[0]
        flat = (c[idx] + n_classes * np.arange(b)[:, None]).ravel()
        sums = np.bincount(flat, weights=v[idx].ravel(), minlength=b * n_classes)
        counts = np.bincount(flat, minlength=b * n_classes).astype(np.float64)
        sums, counts = sums.reshape(b, n_classes), counts.reshape(b, n_classes)
        drawn = counts > 0
        means = np.divide(sums, counts, out=np.zeros_like(sums), where=drawn)
        return np.asarray(means.sum(axis=1) / drawn.sum(axis=1))

    return statistic
