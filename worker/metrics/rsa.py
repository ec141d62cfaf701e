"""Representational similarity analysis (RSA): RDMs, hypothesis RDMs and their comparison.

An RDM (representational dissimilarity matrix) is held as its condensed upper triangle: the
n(n-1)/2 dissimilarities d(i, j), i < j, in scipy `squareform` order. `rdm` gives the numbers
of rsatoolbox 0.3.2 `calc_rdm(Dataset(x), method=...)` for "correlation" and "euclidean"
(rsatoolbox's "euclidean" is the squared Euclidean distance divided by the number of
features); rsatoolbox has no "cosine" RDM, ours is scipy's `pdist(x, "cosine")`.
`compare_rdms` gives rsatoolbox `compare(..., method="spearman" / "tau-a" / "corr")`.
`pool_tokens` is Yousefi et al.'s (2023) pooling of the relevant tokens of each item, and
`standardise` its per-feature z-scoring.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.spatial.distance import pdist, squareform
from scipy.stats import kendalltau

from reprlab.worker.errors import MetricError

FloatArray = npt.NDArray[np.float64]
RdmMethod = Literal["cosine", "correlation", "euclidean"]
CompareMethod = Literal["spearman", "kendall_tau_a", "pearson"]

RDM_LABELS: dict[str, str] = {
    "cosine": "cosine distance 1 - cos(x_i, x_j)",
    "correlation": "correlation distance 1 - Pearson r(x_i, x_j) across features",
    "euclidean": "squared Euclidean / d (rsatoolbox 'euclidean')",
}
COMPARE_LABELS: dict[str, str] = {
    "spearman": "Spearman rho (average ranks for ties)",
    "kendall_tau_a": "Kendall tau-a",
    "pearson": "Pearson r",
}
# Elements of one block of [items, tokens, features] in `pool_tokens` (float64: 256 MiB).
_POOL_BLOCK_ELEMENTS = 1 << 25


def rdm(x: npt.ArrayLike, method: RdmMethod) -> FloatArray:
    """The model RDM of n items, condensed (length n(n-1)/2, scipy `squareform` order).

    Definitions, for rows x_i of x (d features), computed in float64 from one product x x^T:
    "cosine": 1 - <x_i, x_j> / (|x_i| |x_j|);
    "correlation": 1 - Pearson r of x_i and x_j across the d features (the cosine distance of
    the rows after subtracting each row's mean), as rsatoolbox "correlation";
    "euclidean": |x_i - x_j|^2 / d, the squared Euclidean distance divided by the number of
    features, as rsatoolbox "euclidean" (not the Euclidean distance itself).
    Rounding below 0 is clipped to 0; "euclidean" is computed after centring the features
    (distances do not change) to avoid cancellation with a large common offset.

    Args:
        x: [n, d] representations, n >= 2.
        method: "cosine", "correlation" or "euclidean".

    Raises:
        MetricError: not a finite 2-D array, n < 2, an unknown method, or (cosine,
            correlation) an item whose vector is zero or constant.
    """
    a = _matrix(x, "x")
    if method == "euclidean":
        a = a - a.mean(axis=0)
        sq = np.einsum("ij,ij->i", a, a)
        dist = a @ a.T  # in place from here: n x n temporaries are the cost at large n
        dist *= -2.0
        dist += sq[:, None]
        dist += sq[None, :]
        dist /= a.shape[1]
    elif method in ("cosine", "correlation"):
        # Exact tests: rounding after centring would turn a constant row into noise.
        bad = np.ptp(a, axis=1) == 0.0 if method == "correlation" else ~np.any(a != 0.0, axis=1)
        if np.any(bad):
            what = "constant across features" if method == "correlation" else "all zeros"
            raise MetricError(
                f"the {method} RDM is undefined: {int(np.sum(bad))} items are {what}",
                hint="drop those items, or use the euclidean RDM",
            )
        if method == "correlation":
            a = a - a.mean(axis=1, keepdims=True)
        norms = np.sqrt(np.einsum("ij,ij->i", a, a))
        a = a / norms[:, None]
        dist = a @ a.T
        np.subtract(1.0, dist, out=dist)
    else:
        raise MetricError(
            f"unknown RDM method {method!r}", hint=f"use one of {', '.join(RDM_LABELS)}"
        )
    np.maximum(dist, 0.0, out=dist)
    return np.asarray(squareform(dist, checks=False), dtype=np.float64)


def categorical_rdm(values: Sequence[Hashable]) -> FloatArray:
    """Hypothesis RDM of a categorical condition: d(i, j) = 0 if values[i] == values[j], else 1.

    Values compare as Python objects (so 1 == 1.0). Condensed, like `rdm`.

    Raises:
        MetricError: fewer than 2 values or an unhashable value.
    """
    codes: dict[Hashable, int] = {}
    try:
        labels = np.array([codes.setdefault(v, len(codes)) for v in values], dtype=np.float64)
    except TypeError as exc:
        raise MetricError(
            f"categorical RDM values must be hashable: {exc}",
            hint="pass one label (string or number) per item",
        ) from None
    _check_items(labels.shape[0])
    return (pdist(labels[:, None], "cityblock") != 0.0).astype(np.float64)


def numeric_rdm(values: Sequence[float] | npt.ArrayLike) -> FloatArray:
    """Hypothesis RDM of a numeric condition: d(i, j) = |values[i] - values[j]|, condensed.

    Raises:
        MetricError: fewer than 2 values, or values that are not finite numbers.
    """
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise MetricError(
            "numeric RDM values must be numbers", hint="use categorical_rdm for labels"
        ) from None
    if v.ndim != 1 or not np.all(np.isfinite(v)):
        raise MetricError("numeric RDM values must be a 1-D sequence of finite numbers")
    _check_items(v.shape[0])
    return np.asarray(pdist(v[:, None], "cityblock"), dtype=np.float64)


def user_rdm(matrix: npt.ArrayLike, n: int) -> FloatArray:
    """A user's hypothesis RDM for n items, checked and condensed.

    Args:
        matrix: an [n, n] symmetric matrix with a zero diagonal (compared with a tolerance of
            1e-9 times its largest absolute entry), or a condensed vector of length n(n-1)/2.
        n: number of items.

    Raises:
        MetricError: wrong shape, non-finite entries, asymmetry or a non-zero diagonal.
    """
    _check_items(n)
    m = np.asarray(matrix, dtype=np.float64)
    pairs = n * (n - 1) // 2
    if not np.all(np.isfinite(m)):
        raise MetricError("the RDM has non-finite entries")
    if m.ndim == 1:
        if m.shape[0] != pairs:
            raise MetricError(
                f"a condensed RDM of {n} items has {pairs} entries, got {m.shape[0]}",
                hint="pass the upper triangle in row order (scipy squareform), or the matrix",
            )
        return m.copy()
    if m.shape != (n, n):
        raise MetricError(f"the RDM must be [{n}, {n}] for {n} items, got {list(m.shape)}")
    tol = 1e-9 * float(np.max(np.abs(m), initial=0.0))
    if np.max(np.abs(np.diag(m))) > tol:
        raise MetricError("the RDM's diagonal must be zero (an item is identical to itself)")
    if np.max(np.abs(m - m.T)) > tol:
        raise MetricError("the RDM must be symmetric: d(i, j) == d(j, i)")
    return np.asarray(squareform(m, checks=False), dtype=np.float64)


def compare_rdms(a: npt.ArrayLike, b: npt.ArrayLike, method: CompareMethod) -> float:
    """Similarity of two condensed RDMs, as rsatoolbox 0.3.2 `compare`.

    "spearman": Pearson correlation of the ranks, ties given their average rank (rsatoolbox
    "spearman", scipy `spearmanr`). "kendall_tau_a": (concordant - discordant) / (m(m-1)/2)
    over all m(m-1)/2 pairs of the m entries, so tied pairs count 0 in the numerator and
    stay in the denominator (rsatoolbox "tau-a"); O(m log m) via scipy's tau-b.
    "pearson": Pearson correlation of the entries (rsatoolbox "corr").

    Raises:
        MetricError: different lengths, not a condensed RDM of >= 3 items, non-finite
            entries, or a constant RDM (rsatoolbox returns 0 there; it is undefined).
    """
    va, vb = _condensed(a, "a"), _condensed(b, "b")
    if va.shape != vb.shape:
        raise MetricError(
            f"the RDMs have {va.shape[0]} and {vb.shape[0]} entries",
            hint="build both RDMs from the same items in the same order",
        )
    return correlate(va, vb, method)


def correlate(va: FloatArray, vb: FloatArray, method: CompareMethod) -> float:
    """`compare_rdms` on two finite 1-D vectors of equal length (no RDM-shape checks), e.g. the
    entries of two RDMs at a subset of pairs."""
    if method == "spearman":
        return _pearson(_average_ranks(va), _average_ranks(vb))
    if method == "pearson":
        return _pearson(va, vb)
    if method == "kendall_tau_a":
        return _tau_a(va, vb)
    raise MetricError(
        f"unknown RDM comparison {method!r}", hint=f"use one of {', '.join(COMPARE_LABELS)}"
    )


def pool_tokens(states: npt.ArrayLike, mask: npt.ArrayLike) -> FloatArray:
    """Max-pool each item's relevant tokens, then z-score every feature across items.

    pooled[i, f] = max over tokens t with mask[i, t] of states[i, t, f], then `standardise`:
    z[i, f] = (pooled[i, f] - mean over items) / std over items, the population std (ddof=0,
    as sklearn's StandardScaler); a feature with the same pooled value for every item (zero
    variance) becomes 0 for every item.

    Args:
        states: [n, t, d] hidden states of n items, t token positions.
        mask: bool [n, t], True at the relevant tokens.

    Returns:
        [n, d] float64.

    Raises:
        MetricError: shapes that do not match, a non-bool mask, non-finite pooled values,
            or an item with no relevant token.
    """
    s = np.asarray(states)
    m = np.asarray(mask)
    if s.ndim != 3 or not np.issubdtype(s.dtype, np.floating):
        raise MetricError(f"states must be a float [n, t, d] array, got shape {list(s.shape)}")
    if m.dtype != np.bool_ or m.shape != s.shape[:2]:
        raise MetricError(
            f"mask must be a bool array of shape {list(s.shape[:2])}, got {m.dtype} {list(m.shape)}"
        )
    empty = np.flatnonzero(~m.any(axis=1))
    if empty.size:
        raise MetricError(
            f"{empty.size} items have no relevant token (first: item {int(empty[0])})",
            hint="mark at least one token of every item in the mask",
        )
    block = max(1, _POOL_BLOCK_ELEMENTS // max(1, s.shape[1] * s.shape[2]))
    pooled = np.concatenate(
        [
            np.where(m[i : i + block, :, None], s[i : i + block], -np.inf).max(axis=1)
            for i in range(0, s.shape[0], block)
        ]
    ).astype(np.float64)
    if not np.all(np.isfinite(pooled)):
        raise MetricError("the pooled states have non-finite values")
    return standardise(pooled)


def standardise(x: npt.ArrayLike) -> FloatArray:
    """Z-score every feature across items: (x[i, f] - mean_f) / std_f, in float64.

    std is the population std (ddof=0, as sklearn's StandardScaler). A feature with the same
    value for every item (zero variance) becomes 0 for every item.

    Args:
        x: [n, d] representations, n >= 2.

    Raises:
        MetricError: not a finite 2-D array, or n < 2.
    """
    a = _matrix(x, "x")
    constant = np.ptp(a, axis=0) == 0.0
    centred = a - a.mean(axis=0)
    std = np.where(constant, 1.0, centred.std(axis=0))
    centred[:, constant] = 0.0
    return np.asarray(centred / std, dtype=np.float64)


def _matrix(x: npt.ArrayLike, name: str) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise MetricError(f"{name} must be an [n, d] array, got shape {list(a.shape)}")
    _check_items(a.shape[0])
    if not np.all(np.isfinite(a)):
        raise MetricError(f"{name} has non-finite values")
    return a


def _check_items(n: int) -> None:
    if n < 2:
        raise MetricError(f"an RDM needs at least 2 items, got {n}")


def _condensed(v: npt.ArrayLike, name: str) -> FloatArray:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1:
        raise MetricError(
            f"RDM {name} must be a condensed vector, got shape {list(a.shape)}",
            hint="convert a square RDM with user_rdm(matrix, n)",
        )
    n = int(round((1 + np.sqrt(1 + 8 * a.shape[0])) / 2))
    if n * (n - 1) // 2 != a.shape[0] or n < 3:
        raise MetricError(
            f"RDM {name} has {a.shape[0]} entries: not n(n-1)/2 for n >= 3 items",
            hint="compare RDMs of at least 3 items",
        )
    if not np.all(np.isfinite(a)):
        raise MetricError(f"RDM {name} has non-finite entries")
    if np.all(a == a[0]):
        raise MetricError(
            f"RDM {name} is constant, so its correlation with any RDM is undefined",
            hint="a categorical hypothesis needs at least two different values "
            "(and a model RDM at least two different items)",
        )
    return a


def _pearson(a: FloatArray, b: FloatArray) -> float:
    ac, bc = a - a.mean(), b - b.mean()
    r = float(np.dot(ac, bc) / np.sqrt(np.dot(ac, ac) * np.dot(bc, bc)))
    return min(1.0, max(-1.0, r))


def _average_ranks(v: FloatArray) -> FloatArray:
    """Ranks 1..m, tied entries sharing their mean rank (scipy `rankdata(v, "average")`)."""
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return np.asarray((last - (counts - 1) / 2.0)[inverse], dtype=np.float64)


def _tau_a(a: FloatArray, b: FloatArray) -> float:
    """tau-a = tau-b * sqrt((P - T_a)(P - T_b)) / P, P pairs, T_x pairs tied in x."""
    pairs = a.shape[0] * (a.shape[0] - 1) / 2.0
    tau_b = kendalltau(a, b, method="asymptotic").statistic
    scale = np.sqrt((pairs - _tied_pairs(a)) * (pairs - _tied_pairs(b))) / pairs
    return min(1.0, max(-1.0, float(tau_b * scale)))


def _tied_pairs(v: FloatArray) -> float:
    counts = np.unique(v, return_counts=True)[1].astype(np.float64)
    return float(np.sum(counts * (counts - 1.0)) / 2.0)
