"""Linear centred kernel alignment (CKA) between representations of the same n items.

With centred features X [n, d1], Y [n, d2] (column means removed) and linear kernels
K = X X^T, L = Y Y^T, CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) (Kornblith et al. 2019).
Biased: HSIC = tr(K H L H) / (n-1)^2, H = I - 11^T/n, so CKA = |X^T Y|_F^2 / (|X^T X|_F
|Y^T Y|_F). Debiased: Song et al.'s (2012) unbiased HSIC, with K~, L~ the kernels with their
diagonals set to 0, HSIC_1 = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2))
- 2/(n-2) 1^T K~ L~ 1] / (n(n-3)), as in Nguyen et al. (2021) and Kornblith's CKA colab.
Everything needs only tr(KL), diag(K) and tr(K) of the centred kernels, computed in float64
either from feature products (cheap when d is small against n) or from n x n Gram matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from reprlab.worker.errors import MetricError

FloatArray = npt.NDArray[np.float64]

LABELS: dict[bool, str] = {False: "CKA, linear, biased", True: "CKA, linear, debiased"}
# Largest total size of the Gram matrices `cka_matrix` keeps at once (bytes).
GRAM_BUDGET_BYTES = 2 << 30


@dataclass(frozen=True)
class _Kernel:
    """A centred linear kernel K: its centred features X [n, d] (K = X X^T) or K [n, n]."""

    matrix: FloatArray
    is_gram: bool
    diag: FloatArray
    trace: float
    self_dot: float  # tr(K K)


def linear_cka(x: npt.ArrayLike, y: npt.ArrayLike, debiased: bool = False) -> float:
    """Linear CKA of two representations of the same items (see the module docstring).

    Args:
        x: [n, d1] representations.
        y: [n, d2] representations of the same n items, in the same order.
        debiased: use the unbiased HSIC estimator (label "CKA, linear, debiased").

    Raises:
        MetricError: not finite 2-D arrays, different n, n < 2 (n < 4 when debiased), a
            representation with no variance, or (debiased) an unbiased HSIC(K, K) <= 0.
    """
    return float(cka_matrix([x], [y], debiased=debiased)[0, 0])


def cka_matrix(
    xs: Sequence[npt.ArrayLike], ys: Sequence[npt.ArrayLike], debiased: bool = False
) -> FloatArray:
    """Linear CKA of every x in xs with every y in ys, e.g. layer x layer.

    Each input's centred kernel is prepared once. Gram matrices are used when they are
    cheaper in total than feature products (many pairs, or d not small against n) and all of
    xs fit in `GRAM_BUDGET_BYTES`; `ys` is streamed. When ys is xs, each pair is computed once.

    Returns:
        [len(xs), len(ys)] float64.

    Raises:
        MetricError: as `linear_cka`, or an empty sequence.
    """
    if not xs or not ys:
        raise MetricError("cka_matrix needs at least one representation on each side")
    same = len(xs) == len(ys) and all(a is b for a, b in zip(xs, ys, strict=True))
    xa = [_matrix(x, f"xs[{i}]", debiased) for i, x in enumerate(xs)]
    ya = xa if same else [_matrix(y, f"ys[{j}]", debiased) for j, y in enumerate(ys)]
    n = xa[0].shape[0]
    for name, a in [(f"xs[{i}]", a) for i, a in enumerate(xa)] + [
        (f"ys[{j}]", a) for j, a in enumerate(ya)
    ]:
        if a.shape[0] != n:
            raise MetricError(
                f"{name} has {a.shape[0]} items but xs[0] has {n}",
                hint="CKA compares representations of the same items, row for row",
            )
    use_gram = _grams_are_cheaper(n, [a.shape[1] for a in xa], [a.shape[1] for a in ya], same)
    kx = [_kernel(a, use_gram) for a in xa]
    out = np.empty((len(xa), len(ya)))
    for j, y in enumerate(ya):
        ky = kx[j] if same else _kernel(y, use_gram)
        for i, k in enumerate(kx):
            if same and i > j:
                continue
            out[i, j] = _cka(k, ky, _dot(k, ky), n, debiased)
            if same:
                out[j, i] = out[i, j]
    return out


def _cka(kx: _Kernel, ky: _Kernel, xy: float, n: int, debiased: bool) -> float:
    if debiased:
        xy = _unbiased(xy, kx.diag, ky.diag, kx.trace, ky.trace, n)
        xx = _unbiased(kx.self_dot, kx.diag, kx.diag, kx.trace, kx.trace, n)
        yy = _unbiased(ky.self_dot, ky.diag, ky.diag, ky.trace, ky.trace, n)
        if xx <= 0.0 or yy <= 0.0:
            raise MetricError(
                "debiased CKA is undefined here: a representation's unbiased HSIC with "
                "itself is <= 0 (too few items for its spread)",
                hint="use more items, or the biased CKA",
            )
        return xy / np.sqrt(xx * yy)
    return xy / np.sqrt(kx.self_dot * ky.self_dot)


def _unbiased(kl: float, dk: FloatArray, dl: FloatArray, tk: float, tl: float, n: int) -> float:
    """n(n-3) HSIC_1 from centred-kernel terms (K 1 = 0, so 1^T K~ 1 = -tr K, K~ 1 = -diag K)."""
    return float(kl - n / (n - 2.0) * np.dot(dk, dl) + tk * tl / ((n - 1.0) * (n - 2.0)))


def _dot(kx: _Kernel, ky: _Kernel) -> float:
    """tr(K L) = |X^T Y|_F^2 = sum(K * L)."""
    if kx is ky:
        return kx.self_dot
    if kx.is_gram:  # every kernel of one cka_matrix call has the same form
        return float(np.dot(kx.matrix.ravel(), ky.matrix.ravel()))
    cross = kx.matrix.T @ ky.matrix
    return float(np.dot(cross.ravel(), cross.ravel()))


def _kernel(x: FloatArray, use_gram: bool) -> _Kernel:
    xc = x - x.mean(axis=0)
    diag = np.einsum("ij,ij->i", xc, xc)
    # tr(K K) = |X X^T|_F^2 = |X^T X|_F^2: take the smaller product.
    small = xc @ xc.T if use_gram or xc.shape[1] > xc.shape[0] else xc.T @ xc
    self_dot = float(np.dot(small.ravel(), small.ravel()))
    matrix = small if use_gram else xc
    return _Kernel(matrix, use_gram, diag, float(diag.sum()), self_dot)


def _grams_are_cheaper(n: int, dx: list[int], dy: list[int], same: bool) -> bool:
    """Compare multiply-adds of the two routes (symmetric products count half)."""
    dims = dx if same else dx + dy
    if same:  # pairs i < j only: the diagonal is each kernel's own tr(K K)
        pairs = len(dx) * (len(dx) - 1) // 2
        cross = (sum(dx) ** 2 - sum(d * d for d in dx)) / 2
    else:
        pairs, cross = len(dx) * len(dy), sum(dx) * sum(dy)
    features = n * (sum(min(d, n) * d for d in dims) / 2 + cross)
    grams = n * n * (sum(dims) / 2 + len(dims) + pairs)
    fits = len(dx) * n * n * 8 <= GRAM_BUDGET_BYTES
    return fits and grams < features


def _matrix(x: npt.ArrayLike, name: str, debiased: bool) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise MetricError(f"{name} must be an [n, d] array, got shape {list(a.shape)}")
    least = 4 if debiased else 2
    if a.shape[0] < least:
        raise MetricError(
            f"{LABELS[debiased]} needs at least {least} items, {name} has {a.shape[0]}",
            hint="use more items" + ("" if not debiased else ", or the biased CKA"),
        )
    if not np.all(np.isfinite(a)):
        raise MetricError(f"{name} has non-finite values")
    if not np.any(np.ptp(a, axis=0) > 0.0):
        raise MetricError(
            f"CKA is undefined: {name} has no variance (every item has the same representation)",
            hint="check that this layer's representations differ between items",
        )
    return a
