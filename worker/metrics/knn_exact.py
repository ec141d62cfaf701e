"""Float64 refinement of the kNN candidates' squared distances (step 2 of `knn.knn_graph`).

A float64 product value ||a||^2 + ||b||^2 - 2 a.b is kept where it is accurate, i.e.
||a||^2 + ||b||^2 <= GRAM_RATIO * d^2: its rounding error is then at most 2 * GRAM_RATIO *
gamma_d relative (gamma_d ~ d * 2**-53), against gamma_d for the explicit ||a - b||^2. After
float32 products these float64 values come from banded products: rows in reverse Cuthill-McKee
order of the candidate graph, each block of rows multiplied with the narrow window of rows
holding its candidates (`band_sq_distances`). Values that are not accurate are recomputed
(`exact_sq_distances`): a row with many of them together with its nearest neighbours, from one
product of the group with the union of its candidates centred on one member of the group (which
keeps the ratio small on low-dimensional data); the rest, and any kept value whose error bound
leaves its order with another candidate open, as explicit differences. The caller then sorts
the candidates by these distances, so near-ties are ordered as by explicit float64 distances.

`error_bound` is the rounding bound of a product's squared distances in any precision; the
candidate search also uses it to tell where float32 products cannot rank a row.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from scipy import sparse
from scipy.sparse.csgraph import reverse_cuthill_mckee
from torch import Tensor

# Elements of one block of the banded float64 product (rows x window) at most.
_BAND_ELEMENTS = 1 << 25
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


def error_bound(dtype: torch.dtype, d: int, device: torch.device) -> float:
    """c * u such that |computed - true| squared distance <= c*u*(|a|^2 + |b|^2).

    Covers a length-d dot product summed in any order (gamma_d), the norm terms and the
    rounding of the centred coordinates to `dtype`.

    Args:
        dtype: of the products; d: the dimension; device: where they run (TF32 on CUDA).
    """
    if dtype == torch.float64:
        u = 2.0**-53
    elif device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        u = 2.0**-11  # TF32 products keep a 10-bit mantissa
    else:
        u = 2.0**-24
    return (2.0 * d + 10.0) * u


def band_sq_distances(x: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
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
    block = max(1, min(_BAND_ROWS, _BAND_ELEMENTS // max(1, n)))
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


def exact_sq_distances(
    x: Tensor, rows: Tensor, cand: Tensor, approx: Tensor, sq_norms: Tensor
) -> Tensor:
    """[r, m] float64 squared distances from x[rows[i]] to x[cand[i, j]] (self: 0).

    Float64 product values (`approx`, from centred data with squared norms `sq_norms`) are
    kept where accurate (GRAM_RATIO); the others are recomputed, by groups for rows with many.
    A kept value whose error bound leaves its order with another candidate of its row open is
    recomputed from the explicit difference, so candidates are ordered as by explicit float64
    distances.

    Args:
        x: [n, d] points; rows: [r] the rows to refine; cand: [r, m] their candidates.
        approx: [r, m] product values of the pairs: kept where float64 and accurate (NaN: not
            computed), else all recomputed.
        sq_norms: [n] squared norms of the centred points that float64 `approx` values use.
    """
    bound = error_bound(torch.float64, x.shape[1], x.device)
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
