"""Exact Euclidean k-nearest-neighbour graphs: one engine for every neighbour-based metric.

1. Candidates: products of the centred data and `torch.topk` keep the m = k+1+8 smallest
   approximate squared distances of every row. The product is symmetric: when it fits in
   memory it is computed once as a symmetric rank-d update (BLAS `?syrk` on the CPU, half the
   multiplications of x @ x.T; blocks of rows times the rows before them elsewhere), and each
   block of rows reads its distances to later rows from the lower triangle. Products are
   float64 on the CPU (there they cost twice float32 ones, and then most distances need no
   refinement) and float32 on a GPU.
2. Exact distances: the candidates' float64 squared distances, kept from float64 products
   where accurate (GRAM_RATIO) and recomputed elsewhere (`knn_exact`); the candidates are then
   sorted by them, so near-ties are ordered as by explicit float64 distances.
3. A row whose float32 products cannot guarantee that the true neighbours are among its
   candidates (points far closer to each other than to the data mean, beyond float32
   resolution) is redone with float64 products.

This module holds the public entry (`knn_graph`, `KnnGraph`, the duplicate helpers) and the
candidate search; `knn_exact` holds the float64 refinement of step 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from scipy.linalg import blas
from threadpoolctl import threadpool_limits
from torch import Tensor

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.knn_exact import (
    GRAM_RATIO,
    band_sq_distances,
    error_bound,
    exact_sq_distances,
)

__all__ = [
    "EXTRA_CANDIDATES",
    "GRAM_RATIO",
    "SYRK",
    "KnnGraph",
    "default_device",
    "knn_graph",
    "remove_duplicates",
    "unique_rows",
]

# Candidates taken beyond k+1 from the product pass, re-ranked in float64.
EXTRA_CANDIDATES = 8
# Default memory budget (elements) of one block of the squared-distance matrix.
_BLOCK_ELEMENTS = 1 << 25
# Elements of the [n, n] product at most for the symmetric pass (one product of half the
# multiplications, kept whole): 2**26 float32 values are 256 MiB, i.e. n <= 8192.
_SYMMETRIC_ELEMENTS = 1 << 26
# Row blocks of the symmetric pass's top-k (and of its products off the CPU).
_MIN_BLOCKS = 8
# Whether the CPU uses BLAS ?syrk for the symmetric product (tests turn it off to cover the
# blocked products that other devices use).
SYRK = True


@dataclass(frozen=True, eq=False)
class KnnGraph:
    """Nearest neighbours of every point, in dadapy's `Base.distances`/`dist_indices` layout.

    Column 0 is the point itself (distance 0); column j its j-th nearest neighbour, ties
    broken by the lower index. Pass `(distances, indices)` to `dadapy.Data(distances=...)`.
    Treat the arrays as read-only: the graph is shared by every metric of a layer.

    Attributes:
        distances: float64[n, k+1], exact Euclidean distances, increasing along each row.
        indices: int64[n, k+1], row indices of the neighbours.
    """

    distances: npt.NDArray[np.float64]
    indices: npt.NDArray[np.int64]

    @property
    def n(self) -> int:
        """Number of points."""
        return int(self.distances.shape[0])

    @property
    def k(self) -> int:
        """Number of neighbours per point (the self column excluded)."""
        return int(self.distances.shape[1]) - 1


def default_device() -> torch.device:
    """CUDA if available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def remove_duplicates(x: Tensor) -> tuple[Tensor, int]:
    """Drop exact duplicate rows, keeping each row's first occurrence in the original order.

    Args:
        x: [n, d] points (any device). 0.0 and -0.0 count as equal.

    Returns:
        The [n_unique, d] distinct rows (`x` itself when there is no duplicate) and the number
        of rows removed.
    """
    keep = unique_rows(x)
    if keep is None:
        return x, 0
    return x[keep], x.shape[0] - keep.numel()


def unique_rows(x: Tensor) -> Tensor | None:
    """Indices of the first occurrence of each distinct row, ascending; None if all distinct.

    Args:
        x: [n, d] points (any device). 0.0 and -0.0 count as equal.
    """
    if x.ndim != 2:
        raise MetricError(f"expected a 2-D tensor [n, d], got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n < 2:
        return None
    _, inverse = torch.unique(x, dim=0, return_inverse=True)
    n_unique = int(inverse.max()) + 1
    if n_unique == n:
        return None
    positions = torch.arange(n, device=x.device)
    first = torch.full((n_unique,), n, dtype=positions.dtype, device=x.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return torch.sort(first).values


def knn_graph(
    x: Tensor,
    k: int,
    *,
    chunk_size: int | None = None,
    device: torch.device | None = None,
    precision: Literal["auto", "float32", "float64"] = "auto",
) -> KnnGraph:
    """Exact Euclidean k nearest neighbours of every row of `x` among the rows of `x`.

    Args:
        x: [n, d] points.
        k: neighbours per point (1 <= k < n).
        chunk_size: rows per product and top-k block. Default: n/8 when the whole [n, n]
            product fits in 2**26 elements (memory ~ n**2), else blocks of about 2**25
            elements (memory ~ chunk_size * n).
        device: where to compute; default CUDA if available, else CPU.
        precision: of the candidate products: "auto" is float64 on the CPU, float32 on a GPU;
            float64 input always uses float64. The result is exact either way; this only moves
            work between the products and the float64 refinement.

    Returns:
        The KnnGraph (numpy, CPU) with k+1 columns, column 0 the point itself.

    Raises:
        MetricError: k >= n, k < 1, a non-2-D input, or rows with NaN/inf.
    """
    n = _validate(x, k)
    device = device if device is not None else default_device()
    if chunk_size is None:
        chunk_size = -(-n // _MIN_BLOCKS) if _symmetric(n) else max(1, _BLOCK_ELEMENTS // n)
    if chunk_size < 1:
        raise MetricError(f"chunk_size must be >= 1, got {chunk_size}")
    if precision not in ("auto", "float32", "float64"):
        raise MetricError(f"precision must be 'auto', 'float32' or 'float64', got {precision!r}")
    wide = x.dtype == torch.float64 or precision == "float64"
    dtype = (
        torch.float64 if wide or (precision == "auto" and device.type == "cpu") else torch.float32
    )
    x = x.to(device)
    m = min(k + 1 + EXTRA_CANDIDATES, n)
    xc = _centered(x, dtype)
    sq_norms = torch.linalg.vector_norm(xc, dim=1).square_()
    approx, cand = _candidates(xc, sq_norms, m, chunk_size)
    rows = torch.arange(n, device=device)
    if dtype != torch.float64:
        # Float64 values of every candidate pair from products over a band (`knn_exact`).
        band, sq64 = band_sq_distances(x, cand)
        d2 = exact_sq_distances(x, rows, cand, band, sq64)
    else:
        d2 = exact_sq_distances(x, rows, cand, approx, sq_norms)
    if m < n and dtype != torch.float64:
        # A non-candidate's true squared distance is >= boundary - tol; if that could undercut
        # the k-th neighbour, the product pass could not rank this row: redo it in float64.
        tol = error_bound(dtype, x.shape[1], device) * (sq_norms + sq_norms.max())
        boundary = approx.amax(dim=1).to(torch.float64)
        kth = torch.kthvalue(d2, k + 1, dim=1).values
        bad = boundary - tol.to(torch.float64) <= kth
        if bool(bad.any()):
            xc64 = _centered(x, torch.float64)
            sq64 = torch.linalg.vector_norm(xc64, dim=1).square_()
            approx_bad, cand[bad] = _row_candidates(xc64, sq64, rows[bad], m, chunk_size)
            d2[bad] = exact_sq_distances(x, rows[bad], cand[bad], approx_bad, sq64)
    dist, idx = _sorted_neighbours(d2, cand, rows, k)
    return KnnGraph(
        distances=np.ascontiguousarray(dist.cpu().numpy(), dtype=np.float64),
        indices=np.ascontiguousarray(idx.cpu().numpy(), dtype=np.int64),
    )


def _validate(x: Tensor, k: int) -> int:
    if x.ndim != 2:
        raise MetricError(f"expected a 2-D tensor [n, d], got shape {tuple(x.shape)}")
    n = int(x.shape[0])
    if k < 1:
        raise MetricError(f"the number of neighbours k must be >= 1, got {k}")
    if k >= n:
        raise MetricError(
            f"{k} nearest neighbours need at least {k + 1} distinct points; got {n}",
            hint="analyse more items, or lower the metric's neighbour count (e.g. range_max)",
        )
    # One sum is finite unless some element is NaN/inf (or the sum overflowed): only then
    # look at every element.
    if x.is_floating_point() and not bool(torch.isfinite(x.sum()).item()):
        finite = torch.isfinite(x).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()
            raise MetricError(
                f"{bad.numel()} of {n} points contain NaN or inf (first: row {int(bad[0])})",
                hint="extract activations in float32; float16 hidden states can overflow",
            )
    return n


def _centered(x: Tensor, dtype: torch.dtype) -> Tensor:
    """[n, d] x minus its mean, in `dtype`: distances are unchanged, products lose less.

    Any common shift leaves distances unchanged, so the mean is taken in x's own precision;
    the one rounding of each centred coordinate is part of `error_bound`.
    """
    centre = x.mean(dim=0) if x.is_floating_point() else x.to(dtype).mean(dim=0)
    return x.to(dtype, copy=True).sub_(centre.to(dtype))


def _candidates(xc: Tensor, sq_norms: Tensor, m: int, block: int) -> tuple[Tensor, Tensor]:
    """The m smallest approximate squared distances of every row, nearest first.

    When the [n, n] product fits in the block budget, it is computed once as a symmetric
    product (`_lower_gram`) and each block of rows reads its upper part from the lower
    triangle; otherwise each block of rows is multiplied with every row.

    Returns:
        [n, m] approximate squared distances (self at -inf) and [n, m] indices.
    """
    n = xc.shape[0]
    gram = _lower_gram(xc, block) if _symmetric(n) else None
    values, indices = [], []
    for s in range(0, n, block):
        e = min(s + block, n)
        if gram is None:
            d2 = torch.addmm(sq_norms[None, :], xc[s:e], xc.T, alpha=-2.0)
        else:
            # Rows s..e are read for the last time: complete them in place from the lower
            # triangle (rows after e, and the block's own lower triangle), then add the norms.
            d2 = gram[s:e]
            d2[:, e:] = gram[e:, s:e].T
            own = d2[:, s:e]
            own.copy_(own.tril() + own.tril(-1).T)
            d2.add_(sq_norms[None, :])
        d2.add_(sq_norms[s:e, None])
        # The point itself is always a candidate, whatever the rounding of its own distance.
        d2.diagonal(s).fill_(-torch.inf)
        top, pos = torch.topk(d2, m, dim=1, largest=False, sorted=False)
        values.append(top)
        indices.append(pos)
    return _nearest_first(torch.cat(values), torch.cat(indices))


def _lower_gram(xc: Tensor, block: int) -> Tensor:
    """[n, n] tensor whose lower triangle (diagonal included) is -2 xc @ xc.T; the rest is not set.

    On the CPU one BLAS symmetric rank-k update (`?syrk`, half the multiplications of the full
    product); elsewhere, blocks of rows times the rows before them.
    """
    n = xc.shape[0]
    if xc.device.type == "cpu" and SYRK:
        syrk = blas.dsyrk if xc.dtype == torch.float64 else blas.ssyrk
        with threadpool_limits(torch.get_num_threads(), user_api="blas"):
            # xc.T is Fortran-ordered: no copy. The result's upper triangle (Fortran order) is
            # the lower triangle of its transpose (C order).
            upper = syrk(-2.0, xc.numpy().T, trans=1)
        return torch.from_numpy(upper.T)
    gram = torch.empty((n, n), dtype=xc.dtype, device=xc.device)
    for s in range(0, n, block):
        e = min(s + block, n)
        gram[s:e, :e] = torch.mm(xc[s:e], xc[:e].T).mul_(-2.0)
    return gram


def _symmetric(n: int) -> bool:
    """Whether the [n, n] product fits in the symmetric budget."""
    return n * n <= _SYMMETRIC_ELEMENTS


def _row_candidates(
    xc: Tensor, sq_norms: Tensor, rows: Tensor, m: int, block: int
) -> tuple[Tensor, Tensor]:
    """`_candidates` for some rows only (each block of rows against every row)."""
    values, indices = [], []
    for s in range(0, rows.numel(), block):
        r = rows[s : s + block]
        d2 = torch.addmm(sq_norms[None, :], xc[r], xc.T, alpha=-2.0).add_(sq_norms[r, None])
        d2[torch.arange(r.numel(), device=r.device), r] = -torch.inf
        top, pos = torch.topk(d2, m, dim=1, largest=False, sorted=False)
        values.append(top)
        indices.append(pos)
    return _nearest_first(torch.cat(values), torch.cat(indices))


def _nearest_first(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    order = torch.argsort(values, dim=1)
    return torch.gather(values, 1, order), torch.gather(indices, 1, order)


def _sorted_neighbours(d2: Tensor, cand: Tensor, rows: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k+1 nearest candidates by exact distance: self first, ties by the lower index."""
    dist = d2.clamp(min=0.0).sqrt_()
    # Self first even among exact duplicates; then by distance, ties by neighbour index.
    dist[cand == rows[:, None]] = -1.0
    by_index = torch.argsort(cand, dim=1)
    cand = torch.gather(cand, 1, by_index)
    dist = torch.gather(dist, 1, by_index)
    order = torch.sort(dist, dim=1, stable=True).indices[:, : k + 1]
    dist = torch.gather(dist, 1, order)
    dist[:, 0] = 0.0
    return dist, torch.gather(cand, 1, order)
