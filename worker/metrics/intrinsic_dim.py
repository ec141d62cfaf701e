"""Intrinsic-dimension estimators on a kNN graph: TwoNN, Gride, MLE, and the normalised AUC.

Implemented here in float64 numpy so that no dadapy output or warning escapes, and written to
give dadapy 0.3.4's numbers on the same neighbours (`IdEstimation.compute_id_2NN` and
`return_id_scaling_gride`, read from its source): same empirical CDF and kept points for
TwoNN, same mu filter, likelihood, bisection and Fisher-information error for Gride. The MLE
is Levina & Bickel's (2004), as Janapati & Ji computed it.

Each estimator is an aggregation of per-point quantities (`twonn_ratios` + `twonn_fit`,
`gride_ratios` + `gride_fit`, `mle_inverses` + `mle_average`); the aggregations take a batch
of samples in their leading axes, which is what a bootstrap (`bootstrap.py`) resamples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.knn import KnnGraph

_EPS = float(np.finfo(np.float64).eps)
# dadapy's Gride defaults: bracket of the ML search, its precision, and the regulariser.
_GRIDE_D0, _GRIDE_D1, _GRIDE_TOL = 1e-3, 1e3, 1e-7

FloatArray = npt.NDArray[np.float64]
MleAverage = Literal["estimates", "inverses"]


@dataclass(frozen=True)
class IdEstimate:
    """One intrinsic-dimension estimate.

    Attributes:
        value: the estimated intrinsic dimension.
        error: its standard error where the estimator gives one, else None.
        scale: mean distance of the neighbours the estimate uses (dadapy's `rs`).
        n_used: number of points whose distance ratio entered the fit.
    """

    value: float
    error: float | None
    scale: float
    n_used: int


@dataclass(frozen=True)
class GrideScale:
    """The Gride estimate at one scale of a sweep (ranks n1 and n2 = 2*n1)."""

    n1: int
    n2: int
    value: float
    error: float
    scale: float
    n_used: int


@dataclass(frozen=True)
class MleScale:
    """The MLE estimate at one neighbour count k of a sweep."""

    k: int
    value: float
    error: float | None
    scale: float
    n_used: int


def twonn(graph: KnnGraph, discard_fraction: float = 0.1) -> IdEstimate:
    """TwoNN (Facco et al. 2017) as dadapy `compute_id_2NN(mu_fraction=1-discard_fraction)`.

    mu_i = r2/r1 over all N points; the n_eff = int(N * (1 - discard_fraction)) smallest log mu
    are fitted against -log(1 - i/N), i = 1..n_eff, by least squares through the origin; the
    slope is the ID. With discard_fraction == 0 the last point of that fit is infinite, so
    (like dadapy) the maximum-likelihood estimate (N - 1) / sum(log mu) is returned instead.
    dadapy reports an error of 0.0 here (it has none without decimation): we give None.

    Args:
        graph: kNN graph with k >= 2 and no duplicate points.
        discard_fraction: fraction of the largest mu left out of the fit, in [0, 1).

    Raises:
        MetricError: too few neighbours or points, duplicates, or all mu equal to 1.
    """
    _check_discard(discard_fraction)
    log_mu = twonn_ratios(graph)
    n_used = _twonn_kept(log_mu.shape[0], discard_fraction)
    scale = float(np.mean(graph.distances[:, 1:3]))
    value = _finite(float(twonn_fit(log_mu, discard_fraction)), "TwoNN")
    return IdEstimate(value, None, scale, n_used)


def twonn_ratios(graph: KnnGraph) -> FloatArray:
    """[N] log mu_i = log(r2 / r1), TwoNN's per-point quantity."""
    r = _columns(graph, 1, 2, "TwoNN")
    return np.log(r[:, 1] / r[:, 0])


def twonn_fit(log_mu: npt.ArrayLike, discard_fraction: float = 0.1) -> FloatArray:
    """TwoNN's ID of each sample of log mu values [..., N] (see `twonn`); shape [...]."""
    log_mu = np.asarray(log_mu, dtype=np.float64)
    n = log_mu.shape[-1]
    n_eff = _twonn_kept(n, discard_fraction)
    with np.errstate(divide="ignore", invalid="ignore"):
        if math.isclose(1.0 - discard_fraction, 1.0):
            return np.asarray((n - 1) / np.sum(log_mu, axis=-1))
        x = np.sort(log_mu, axis=-1)[..., :n_eff]
        y = -np.log(1.0 - np.arange(1, n_eff + 1) / n)
        return np.asarray((x @ y) / np.sum(x * x, axis=-1))


def _check_discard(discard_fraction: float) -> None:
    if not 0.0 <= discard_fraction < 1.0:
        raise MetricError(f"discard_fraction must be in [0, 1), got {discard_fraction}")


def _twonn_kept(n: int, discard_fraction: float) -> int:
    """Points in TwoNN's fit: int(n * (1 - discard_fraction)), or n without discard."""
    _check_discard(discard_fraction)
    mu_fraction = 1.0 - discard_fraction
    if math.isclose(mu_fraction, 1.0):
        return n
    n_eff = int(n * mu_fraction)
    if n_eff < 1:
        needed = max(n, 1)
        while int(needed * mu_fraction) < 1:
            needed += 1
        raise MetricError(
            f"TwoNN keeps int(N * {mu_fraction:g}) points; with {n} distinct points that is none",
            hint=f"analyse at least {needed} distinct points",
        )
    return n_eff


def gride(graph: KnnGraph, n1: int, n2: int) -> IdEstimate:
    """Gride (Denti et al. 2022): maximum-likelihood ID from mu_i = r_{n2} / r_{n1}.

    As dadapy's single-scale Gride: mu == 1 is nudged by 10 eps; mu >= q50 + 20 (q95 - q50)
    (likely overlapping points) is dropped; the likelihood's root is bisected on [1e-3, 1e3]
    to 1e-7; the error is 1/sqrt(Fisher information) over all N ratios. dadapy computes that
    error with n2 = 2*n1 whatever n2 is; we use the actual n2 (same when n2 == 2*n1).

    Args:
        graph: kNN graph with k >= n2 and no duplicate points.
        n1: rank of the inner neighbour (>= 1).
        n2: rank of the outer neighbour (n1 < n2 <= graph.k).
    """
    if not 1 <= n1 < n2:
        raise MetricError(f"Gride needs 1 <= n1 < n2, got n1={n1}, n2={n2}")
    fit = _gride_fit(_columns(graph, n1, n2, "Gride"), n1, n2)
    return IdEstimate(fit.value, fit.error, fit.scale, fit.n_used)


def gride_scaling(graph: KnnGraph, range_max: int) -> list[GrideScale]:
    """Gride over the scales n1 = 1, 2, 4, ..., n2 = 2*n1 <= range_max.

    The sweep of dadapy `return_id_scaling_gride(range_max=...)`, with the ID, its error and the
    mean of r_{n1} and r_{n2} over the points at each scale. Unlike dadapy, which silently
    shortens the sweep when there are fewer than range_max neighbours, this raises.

    Args:
        graph: kNN graph with k >= the largest n2 (the largest power of two <= range_max).
        range_max: largest neighbour rank of the sweep (>= 2).
    """
    return [
        _gride_fit(_columns(graph, n1, n2, "Gride"), n1, n2) for n1, n2 in gride_scales(range_max)
    ]


def gride_scales(range_max: int) -> list[tuple[int, int]]:
    """The (n1, n2) pairs of a Gride sweep: (1, 2), (2, 4), ... with n2 <= range_max."""
    if range_max < 2:
        raise MetricError(f"Gride's range_max must be >= 2, got {range_max}")
    return [(1 << i, 2 << i) for i in range(int(math.log2(range_max)))]


def gride_ratios(graph: KnnGraph, n1: int, n2: int) -> FloatArray:
    """[N] mu_i = r_{n2} / r_{n1}, Gride's per-point quantity."""
    if not 1 <= n1 < n2:
        raise MetricError(f"Gride needs 1 <= n1 < n2, got n1={n1}, n2={n2}")
    r = _columns(graph, n1, n2, "Gride")
    return r[:, 1] / r[:, 0]


def gride_fit(mus: npt.ArrayLike, n1: int, n2: int) -> FloatArray:
    """Gride's ML ID of each sample of ratios mu [..., N] (see `gride`); shape [...].

    Each sample gets dadapy's treatment: mu == 1 nudged, its own outlier filter, and the
    bisection of the likelihood's derivative (all samples bisect in step).
    """
    mus = np.array(mus, dtype=np.float64, ndmin=1)
    shape = mus.shape[:-1]
    mus = mus.reshape(-1, mus.shape[-1])
    mus[mus == 1.0] += 10 * _EPS
    q95, q50 = np.percentile(mus, [95, 50], axis=1, keepdims=True)
    kept = mus < 20 * (q95 - q50) + q50
    counts = kept.sum(axis=1)
    if np.any(counts < 2):
        raise MetricError("Gride: fewer than two usable distance ratios after filtering")
    log_mu = np.where(kept, np.log(mus), 0.0)
    d0 = np.full(mus.shape[0], _GRIDE_D0)
    d1 = np.full(mus.shape[0], _GRIDE_D1)
    l1 = _neg_dloglik(d1, log_mu, counts, n1, n2)
    while abs(d0[0] - d1[0]) > _GRIDE_TOL:  # every sample halves the same bracket
        d2 = (d0 + d1) / 2.0
        upper = _neg_dloglik(d2, log_mu, counts, n1, n2) * l1 > 0
        d1 = np.where(upper, d2, d1)
        d0 = np.where(upper, d0, d2)
    return ((d0 + d1) / 2.0).reshape(shape)


def mle(graph: KnnGraph, k: int, average: MleAverage = "estimates") -> IdEstimate:
    """Levina & Bickel's (2004) maximum-likelihood ID with k neighbours.

    Per point, m_k(x_i) = [ (1/(k-1)) sum_{j=1}^{k-1} log(T_k(x_i) / T_j(x_i)) ]^-1, with T_j the
    distance to the j-th neighbour. average="estimates" takes their mean over the points, as
    Levina & Bickel (their final estimator also averages over a range of k: take the mean of
    an `mle_sweep`) and Janapati & Ji do; "inverses" is MacKay & Ghahramani's correction, the
    inverse of the mean of 1/m_k(x_i), the ML estimate of one dimension from all points'
    distances (their 2005 comments on the paper), which avoids the upward bias that averaging
    the estimates has at small k.

    The error is the standard error over points: std(m_k) / sqrt(N), or by the delta method
    std(1/m_k) / (sqrt(N) mean(1/m_k)^2) for "inverses". Neighbourhoods overlap, so the points
    are not independent and this understates the uncertainty; None with a single point.

    Args:
        graph: kNN graph with graph.k >= k and no duplicate points.
        k: neighbours per point (>= 2).
        average: how the per-point estimates are combined.

    Raises:
        MetricError: k < 2 or above the graph's k, duplicates, or all k distances equal.
    """
    inverses = mle_inverses(graph, k)
    n = inverses.shape[0]
    value = _finite(float(mle_average(inverses, average)), "MLE")
    error = None
    if n > 1:
        if average == "estimates":
            error = float(np.std(1.0 / inverses, ddof=1) / math.sqrt(n))
        else:
            error = float(np.std(inverses, ddof=1) / math.sqrt(n) * value**2)
    scale = float(np.mean(graph.distances[:, 1 : k + 1]))
    return IdEstimate(value, error, scale, n)


def mle_sweep(
    graph: KnnGraph, ks: Sequence[int], average: MleAverage = "estimates"
) -> list[MleScale]:
    """`mle` for each neighbour count in `ks` (e.g. Janapati & Ji's 15, 25, 50, 75, 100)."""
    out = []
    for k in ks:
        est = mle(graph, k, average)
        out.append(MleScale(k, est.value, est.error, est.scale, est.n_used))
    return out


def mle_inverses(graph: KnnGraph, k: int) -> FloatArray:
    """[N] 1 / m_k(x_i) = (1/(k-1)) sum_{j<k} log(T_k / T_j), the MLE's per-point quantity."""
    if k < 2:
        raise MetricError(f"MLE needs k >= 2 neighbours, got k={k}")
    t = _columns(graph, 1, k, "MLE", every=True)
    return np.mean(np.log(t[:, -1:] / t[:, :-1]), axis=1)


def mle_average(inverses: npt.ArrayLike, average: MleAverage = "estimates") -> FloatArray:
    """The MLE of each sample of per-point inverses [..., N] (see `mle`); shape [...]."""
    inverses = np.asarray(inverses, dtype=np.float64)
    with np.errstate(divide="ignore"):
        if average == "estimates":
            return np.asarray(np.mean(1.0 / inverses, axis=-1))
        if average == "inverses":
            return np.asarray(1.0 / np.mean(inverses, axis=-1))
    raise MetricError(f"average must be 'estimates' or 'inverses', got {average!r}")


def normalised_auc(layers: Sequence[int], values: Sequence[float | None]) -> float | None:
    """Normalised area under an ID-vs-layer curve (Janapati & Ji's summary of an ID curve).

    Definition: with L = max(layers), each layer l > 0 maps to t = l / L in (0, 1]; layer 0
    (the embeddings) and points whose value is None or not finite are left out. The remaining
    points (t_i, v_i), sorted by t, are integrated by the trapezoid rule and the area is
    divided by the covered width t_last - t_first. The result is thus the trapezoid-weighted
    mean value over the covered layers, in the units of the values (e.g. layers 1..4 with IDs
    2, 4, 4, 2 give ((3 + 4 + 3) / 4) / (3 / 4) = 10/3).

    Returns:
        The normalised AUC, or None with fewer than two usable points.
    """
    if len(layers) != len(values):
        raise MetricError(f"{len(layers)} layers but {len(values)} values")
    top = max(layers, default=0)
    if top <= 0:
        return None
    points = sorted(
        (layer / top, float(v))
        for layer, v in zip(layers, values, strict=True)
        if layer > 0 and v is not None and math.isfinite(v)
    )
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return None
    t = np.array([p[0] for p in points])
    v = np.array([p[1] for p in points])
    area = float(np.sum((t[1:] - t[:-1]) * (v[1:] + v[:-1]) / 2.0))
    return area / float(t[-1] - t[0])


def _columns(graph: KnnGraph, n1: int, n2: int, name: str, *, every: bool = False) -> FloatArray:
    """[N, 2] distances to the n1-th and n2-th neighbours ([N, n2-n1+1] with every=True:
    the n1-th to the n2-th), checked for rank and zeros."""
    if graph.k < n2:
        raise MetricError(
            f"{name} needs the {n2}-th nearest neighbour; the graph has k={graph.k}",
            hint=f"build the kNN graph with k >= {n2} (at least {n2 + 1} distinct points)",
        )
    cols = slice(n1, n2 + 1) if every else [n1, n2]
    r = np.asarray(graph.distances[:, cols], dtype=np.float64)
    if np.any(r[:, 0] <= 0.0):
        raise MetricError(
            f"{name}: {int(np.sum(r[:, 0] <= 0.0))} points have their {n1}-th neighbour at "
            "distance 0 (duplicate points)",
            hint="remove duplicate rows before estimating the intrinsic dimension",
        )
    return r


def _gride_fit(r: FloatArray, n1: int, n2: int) -> GrideScale:
    """Gride on [N, 2] distances (r_n1, r_n2), step for step as dadapy 0.3.4."""
    mus = r[:, 1] / r[:, 0]
    dim = float(gride_fit(mus, n1, n2))
    mus[mus == 1.0] += 10 * _EPS
    q95, q50 = np.percentile(mus, [95, 50])
    n_used = int(np.sum(mus < 20 * (q95 - q50) + q50))
    error = 1.0 / math.sqrt(_fisher_information(dim, mus, n1, n2))
    return GrideScale(n1, n2, dim, error, float(np.mean(r)), n_used)


def _neg_dloglik(
    d: FloatArray, log_mu: FloatArray, counts: npt.NDArray[np.int64], n1: int, n2: int
) -> FloatArray:
    """Minus the derivative in d of Gride's log-likelihood per sample (dadapy's regulariser).

    `log_mu` [b, N] holds log mu of the kept ratios and 0 elsewhere; `d` and `counts` are [b].
    """
    one_m = 1.0 - np.exp(-d[:, None] * log_mu)
    one_m[one_m < 2 * _GRIDE_TOL] = 2 * _GRIDE_TOL
    total = np.sum(((1 - n2 + n1) / one_m + n2 - 1.0) * log_mu, axis=1)
    return np.asarray(total - (counts - 1) / d)


def _fisher_information(d: float, mus: FloatArray, n1: int, n2: int) -> float:
    one_m = 1.0 - mus ** (-d)
    one_m[one_m < 5 * _EPS] = 5 * _EPS
    terms = (np.log(mus) / one_m) ** 2 * mus ** (-d)
    return float(mus.shape[0] / d**2 + np.sum((n2 - n1 - 1) * terms))


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise MetricError(
            f"{name} is undefined here (all distance ratios equal 1?)",
            hint="check the representations for degenerate or lattice-like points",
        )
    return float(value)
