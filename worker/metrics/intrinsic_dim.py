"""Intrinsic-dimension estimators on a kNN graph: TwoNN, Gride, and the normalised AUC.

Implemented here in float64 numpy so that no dadapy output or warning escapes, and written to
give dadapy 0.3.4's numbers on the same neighbours (`IdEstimation.compute_id_2NN` and
`return_id_scaling_gride`, read from its source): same empirical CDF and kept points for
TwoNN, same mu filter, likelihood, bisection and Fisher-information error for Gride.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.knn import KnnGraph

_EPS = float(np.finfo(np.float64).eps)
# dadapy's Gride defaults: bracket of the ML search, its precision, and the regulariser.
_GRIDE_D0, _GRIDE_D1, _GRIDE_TOL = 1e-3, 1e3, 1e-7

FloatArray = npt.NDArray[np.float64]


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
    if not 0.0 <= discard_fraction < 1.0:
        raise MetricError(f"discard_fraction must be in [0, 1), got {discard_fraction}")
    r = _columns(graph, 1, 2, "TwoNN")
    log_mu = np.log(r[:, 1] / r[:, 0])
    n = log_mu.shape[0]
    mu_fraction = 1.0 - discard_fraction
    scale = float(np.mean(r))
    if math.isclose(mu_fraction, 1.0):
        with np.errstate(divide="ignore", invalid="ignore"):
            ml = (n - 1) / np.sum(log_mu)
        return IdEstimate(_finite(ml, "TwoNN"), None, scale, n)
    n_eff = int(n * mu_fraction)
    if n_eff < 1:
        needed = max(n, 1)
        while int(needed * mu_fraction) < 1:
            needed += 1
        raise MetricError(
            f"TwoNN keeps int(N * {mu_fraction:g}) points; with {n} distinct points that is none",
            hint=f"analyse at least {needed} distinct points",
        )
    x = np.sort(log_mu)[:n_eff]
    y = -np.log(1.0 - np.arange(1, n_eff + 1) / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.dot(x, y) / np.dot(x, x)
    return IdEstimate(_finite(slope, "TwoNN"), None, scale, n_eff)


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


def _columns(graph: KnnGraph, n1: int, n2: int, name: str) -> FloatArray:
    """[N, 2] distances to the n1-th and n2-th neighbours, checked for rank and zeros."""
    if graph.k < n2:
        raise MetricError(
            f"{name} needs the {n2}-th nearest neighbour; the graph has k={graph.k}",
            hint=f"build the kNN graph with k >= {n2} (at least {n2 + 1} distinct points)",
        )
    r = np.asarray(graph.distances[:, [n1, n2]], dtype=np.float64)
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
    mus[mus == 1.0] += 10 * _EPS
    q95, q50 = np.percentile(mus, [95, 50])
    kept = mus[mus < 20 * (q95 - q50) + q50]
    if kept.size < 2:
        raise MetricError("Gride: fewer than two usable distance ratios after filtering")
    d0, d1 = _GRIDE_D0, _GRIDE_D1
    l1 = _neg_dloglik(d1, kept, n1, n2)
    while abs(d0 - d1) > _GRIDE_TOL:
        d2 = (d0 + d1) / 2.0
        if _neg_dloglik(d2, kept, n1, n2) * l1 > 0:
            d1 = d2
        else:
            d0 = d2
    dim = (d0 + d1) / 2.0
    error = 1.0 / math.sqrt(_fisher_information(dim, mus, n1, n2))
    return GrideScale(n1, n2, dim, error, float(np.mean(r)), int(kept.size))


def _neg_dloglik(d: float, mus: FloatArray, n1: int, n2: int) -> float:
    """Minus the derivative of Gride's log-likelihood in d (dadapy's regularisation)."""
    one_m = 1.0 - mus ** (-d)
    one_m[one_m < 2 * _GRIDE_TOL] = 2 * _GRIDE_TOL
    total = np.sum(((1 - n2 + n1) / one_m + n2 - 1.0) * np.log(mus))
    return float(total - (mus.shape[0] - 1) / d)


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
