"""Exact Euclidean k-nearest-neighbour graphs: one engine for every neighbour-based metric.

1. Candidates: products of the centred data and `torch.topk` keep the m = k+1+8 smallest
   approximate squared distances of every row. The product is symmetric: when it fits in
   memory it is computed once as a symmetric rank-d update (BLAS `?syrk` on the CPU, half the
   multiplications of x @ x.T; blocks of rows times the rows before them elsewhere), and each
   block of rows reads its distances to later rows from the lower triangle. Products are
   float64 on the CPU (there they cost twice float32 ones, and then most distances need no
   refinement) and float32 on a GPU.
2. Exact distances: a float64 product value ||a||^2 + ||b||^2 - 2 a.b is kept where it is
   accurate, i.e. ||a||^2 + ||b||^2 <= GRAM_RATIO * d^2: its rounding error is then at most
   2 * GRAM_RATIO * gamma_d relative (gamma_d ~ d * 2**-53), against gamma_d for the explicit
   ||a - b||^2. After float32 products these float64 values come from banded products: rows
   in reverse Cuthill-McKee order of the candidate graph, each block of rows multiplied with
   the narrow window of rows holding its candidates (`_band_sq_distances`). Values that are
   not accurate are recomputed: a row with many of them together with its nearest neighbours,
   from one product of the group with the union of its candidates centred on one member of
   the group (which keeps the ratio small on low-dimensional data); the rest, and any kept
   value whose error bound leaves its order with another candidate open, as explicit
   differences. The candidates are then sorted by these distances, so near-ties are ordered
   as by explicit float64 distances.
3. A row whose float32 products cannot guarantee that the true neighbours are among its
   candidates (points far closer to each other than to the data mean, beyond float32
   resolution) is redone with float64 products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from scipy import sparse
from scipy.linalg import blas
from scipy.sparse.csgraph import reverse_cuthill_mckee
from threadpoolctl import threadpool_limits
from torch import Tensor

from reprlab.worker.errors import MetricError

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
# Rows per block of the banded float64 product.
_BAND_ROWS = 128
# Fraction of a band block's candidate positions left out at each end of its window.
_BAND_TRIM = 0.005
# Rows per refinement group (a seed and its nearest not yet refined neighbours).
_GROUP_ROWS = 64
# A row with more than this fraction of its candidates to recompute goes to a group.
_GROUP_FRACTION = 0.25
# Elements of a group's float64 candidate rows at most.
_REFINE_ELEMENTS = 1 << 24
# Elements of one block of explicit float64 differences: cache-sized on the CPU (several times
# faster than large blocks there), large on a GPU (fewer kernel launches).
_DIFF_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 24}
# A float64 Gram value ||a||^2 + ||b||^2 - 2 a.b of the squared distance d^2 is kept when
# ||a||^2 + ||b||^2 <= GRAM_RATIO * d^2 (a, b centred); otherwise it is recomputed.
GRAM_RATIO = 16.0


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
        # Float64 values of every candidate pair from products over a band (see module doc).
        band, sq64 = _band_sq_distances(x, cand)
        d2 = _exact_sq_distances(x, rows, cand, band, sq64)
    else:
        d2 = _exact_sq_distances(x, rows, cand, approx, sq_norms)
    if m < n and dtype != torch.float64:
        # A non-candidate's true squared distance is >= boundary - tol; if that could undercut
        # the k-th neighbour, the product pass could not rank this row: redo it in float64.
        tol = _error_bound(dtype, x.shape[1], device) * (sq_norms + sq_norms.max())
        boundary = approx.amax(dim=1).to(torch.float64)
        kth = torch.kthvalue(d2, k + 1, dim=1).values
        bad = boundary - tol.to(torch.float64) <= kth
        if bool(bad.any()):
            xc64 = _centered(x, torch.float64)
            sq64 = torch.linalg.vector_norm(xc64, dim=1).square_()
            approx_bad, cand[bad] = _row_candidates(xc64, sq64, rows[bad], m, chunk_size)
            d2[bad] = _exact_sq_distances(x, rows[bad], cand[bad], approx_bad, sq64)
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
    the one rounding of each centred coordinate is part of `_error_bound`.
    """
    centre = x.mean(dim=0) if x.is_floating_point() else x.to(dtype).mean(dim=0)
    return x.to(dtype, copy=True).sub_(centre.to(dtype))


def _error_bound(dtype: torch.dtype, d: int, device: torch.device) -> float:
    """c * u such that |computed - true| squared distance <= c*u*(|a|^2 + |b|^2).

    Covers a length-d dot product summed in any order (gamma_d), the norm terms and the
    rounding of the centred coordinates to `dtype`.
    """
    if dtype == torch.float64:
        u = 2.0**-53
    elif device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        u = 2.0**-11  # TF32 products keep a 10-bit mantissa
    else:
        u = 2.0**-24
    return (2.0 * d + 10.0) * u


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


def _band_sq_distances(x: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    """[n, m] float64 squared distances ||a||^2 + ||b||^2 - 2 a.b of each row to its candidates.

    The rows are put in reverse Cuthill-McKee order of the candidate graph, which brings
    neighbours close together, so a block of consecutive rows finds nearly all of its
    candidates in a narrow window of rows: one float64 product of the block with its window
    gives them. A window holds the block's candidates from the 0.5% to the 99.5% quantile of
    their positions; the few candidates outside are NaN (the caller recomputes them). On data
    without neighbourhood structure the windows grow to the whole data set and this costs one
    float64 product; on clustered data (hidden states) a small fraction of one.

    Args:
        x: [n, d] points; cand: [n, m] indices of each row's candidates.

    Returns:
        The [n, m] values and the [n] float64 squared norms of the centred points they use.
    """
    n, m = cand.shape
    order = torch.from_numpy(_bandwidth_order(cand.cpu().numpy(), n)).to(x.device)
    pos = torch.empty_like(order)
    pos[order] = torch.arange(n, device=x.device)
    # Centred in float64, in the new order: one pass over the data.
    centre = x.mean(dim=0) if x.is_floating_point() else x.to(torch.float64).mean(dim=0)
    xp = torch.sub(x[order].to(torch.float64), centre.to(torch.float64))
    sqp = torch.linalg.vecdot(xp, xp)
    where = pos[cand[order]]  # [n, m] positions (new order) of each row's candidates
    block = max(1, min(_BAND_ROWS, _BLOCK_ELEMENTS // max(1, n)))
    out = torch.empty((n, m), dtype=torch.float64, device=x.device)
    for s in range(0, n, block):
        e = min(s + block, n)
        at = where[s:e]
        flat = at.flatten()
        cut = max(1, int(_BAND_TRIM * flat.numel()))
        lo = min(int(torch.kthvalue(flat, cut).values), s)
        hi = max(int(torch.kthvalue(flat, flat.numel() - cut + 1).values) + 1, e)
        gram = xp[s:e] @ xp[lo:hi].T
        g = torch.gather(gram, 1, (at - lo).clamp_(0, hi - lo - 1))
        d2 = (sqp[s:e, None] + sqp[at]).sub_(g, alpha=2.0)
        out[order[s:e]] = d2.masked_fill_((at < lo) | (at >= hi), torch.nan)
    sq_norms = torch.empty_like(sqp)
    sq_norms[order] = sqp
    return out, sq_norms


def _bandwidth_order(cand: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    """A row order (reverse Cuthill-McKee of the symmetrised candidate graph) of small bandwidth."""
    edges = sparse.csr_matrix(
        (
            np.ones(cand.size, dtype=np.int8),
            cand.ravel(),
            np.arange(0, cand.size + 1, cand.shape[1]),
        ),
        shape=(n, n),
    )
    order = reverse_cuthill_mckee((edges + edges.T).tocsr(), symmetric_mode=True)
    return np.asarray(order, dtype=np.int64)


def _nearest_first(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    order = torch.argsort(values, dim=1)
    return torch.gather(values, 1, order), torch.gather(indices, 1, order)


def _exact_sq_distances(
    x: Tensor, rows: Tensor, cand: Tensor, approx: Tensor, sq_norms: Tensor
) -> Tensor:
    """[r, m] float64 squared distances from x[rows[i]] to x[cand[i, j]] (self: 0).

    Float64 product values (`approx`, from centred data with squared norms `sq_norms`) are
    kept where accurate (GRAM_RATIO); the others are recomputed, by groups for rows with many.
    A kept value whose error bound leaves its order with another candidate of its row open is
    recomputed from the explicit difference, so candidates are ordered as by explicit float64
    distances.
    """
    bound = _error_bound(torch.float64, x.shape[1], x.device)
    is_self = cand == rows[:, None]
    if approx.dtype == torch.float64:
        d2 = approx.clone()
        scale = sq_norms[rows, None] + sq_norms[cand]
        # NaN (a value the caller could not compute) fails the comparison and is recomputed.
        redo = ~is_self & ~(scale <= GRAM_RATIO * d2)
        err = bound * scale
    else:
        d2 = torch.empty(cand.shape, dtype=torch.float64, device=x.device)
        redo = ~is_self
        err = torch.empty_like(d2)
    d2[is_self] = 0.0
    err[redo | is_self] = 0.0
    grouped = redo.sum(dim=1) > _GROUP_FRACTION * cand.shape[1]
    if bool(grouped.any()):
        d2[grouped], err[grouped] = _group_sq_distances(x, rows[grouped], cand[grouped], bound)
        redo &= ~grouped[:, None]
    # First the inaccurate values, then (with every value final) the unresolved near-ties.
    _recompute(x, rows, cand, d2, redo)
    _recompute(x, rows, cand, d2, _near_ties(d2, err))
    return d2


def _near_ties(d2: Tensor, err: Tensor) -> Tensor:
    """[r, m] mask of inexact values (err > 0) whose interval d2 +- err meets another's."""
    order = torch.argsort(d2, dim=1)
    value, e = torch.gather(d2, 1, order), torch.gather(err, 1, order)
    low, high = value - e, value + e
    meets = torch.zeros_like(value, dtype=torch.bool)
    meets[:, 1:] = low[:, 1:] <= torch.cummax(high, dim=1).values[:, :-1]
    later_low = torch.flip(torch.cummin(torch.flip(low, [1]), dim=1).values, [1])
    meets[:, :-1] |= high[:, :-1] >= later_low[:, 1:]
    return torch.zeros_like(meets).scatter_(1, order, meets & (e > 0))


def _group_sq_distances(
    x: Tensor, rows: Tensor, cand: Tensor, bound: float
) -> tuple[Tensor, Tensor]:
    """[r, m] float64 squared distances from x[rows[i]] to x[cand[i, j]] and their error bounds.

    Each group of rows (`_groups`) takes one float64 product with the union of its candidates,
    centred on its first row; pairs that this would round worse than GRAM_RATIO allows are
    recomputed from their explicit differences (error bound 0).
    """
    r, m = cand.shape
    d2 = torch.empty((r, m), dtype=torch.float64, device=x.device)
    scale = torch.empty_like(d2)
    size = max(1, min(_GROUP_ROWS, _REFINE_ELEMENTS // (m * x.shape[1])))
    for group in _groups(rows, cand, x.shape[0], size):
        g = torch.from_numpy(group).to(x.device)
        members, neighbours = rows[g], cand[g]
        union = torch.unique(neighbours)
        seed = x[members[0]].to(torch.float64)
        a = x[members].to(torch.float64).sub_(seed)
        b = x[union].to(torch.float64).sub_(seed)
        pos = torch.searchsorted(union, neighbours)
        sq_a = torch.linalg.vecdot(a, a)[:, None]
        sq_b = torch.linalg.vecdot(b, b)[pos]
        gram = torch.gather(a @ b.T, 1, pos)
        scale[g] = sq_a + sq_b
        d2[g] = (sq_a + sq_b).sub_(gram, alpha=2.0)
    redo = scale > GRAM_RATIO * d2
    _recompute(x, rows, cand, d2, redo)
    return d2, torch.where(redo, 0.0, bound * scale)


def _groups(rows: Tensor, cand: Tensor, n: int, size: int) -> list[npt.NDArray[np.int64]]:
    """Partition of range(len(rows)): each part a seed row and its nearest unassigned rows.

    Rows of a group share most of their candidates, so a group's candidate union stays small.
    `cand` holds each row's candidates nearest first.
    """
    local = np.full(n, -1, dtype=np.int64)
    local[rows.cpu().numpy()] = np.arange(rows.numel())
    near = local[cand.cpu().numpy()]
    assigned = np.zeros(rows.numel(), dtype=bool)
    groups = []
    for i in range(rows.numel()):
        if assigned[i]:
            continue
        others = near[i][(near[i] >= 0) & (near[i] != i)]
        group = np.concatenate(([i], others[~assigned[others]]))[:size]
        assigned[group] = True
        groups.append(group)
    return groups


def _recompute(x: Tensor, rows: Tensor, cand: Tensor, d2: Tensor, mask: Tensor) -> None:
    """Set d2[mask] in place to the explicit float64 squared distances of those pairs."""
    pairs = torch.nonzero(mask, as_tuple=True)
    if pairs[0].numel():
        d2[pairs] = _explicit_sq_distances(x, rows[pairs[0]], cand[pairs])


def _explicit_sq_distances(x: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """[p] float64 ||x[i] - x[j]||^2 for pairs of row indices."""
    out = torch.empty(i.numel(), dtype=torch.float64, device=x.device)
    budget = _DIFF_ELEMENTS.get(x.device.type, _DIFF_ELEMENTS["cuda"])
    step = max(1, budget // x.shape[1])
    for s in range(0, i.numel(), step):
        diff = x[j[s : s + step]].to(torch.float64) - x[i[s : s + step]].to(torch.float64)
        out[s : s + step] = torch.linalg.vecdot(diff, diff)
    return out


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
