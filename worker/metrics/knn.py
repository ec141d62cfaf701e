"""Exact Euclidean k-nearest-neighbour graphs: one engine for every neighbour-based metric.

Candidates come from chunked matrix products (float32, or float64 for float64 input) and
`torch.topk`; the chosen candidates' distances are then recomputed as ||x_i - x_j|| in float64
and re-sorted, so near-ties are ordered by their exact distances. A row whose float32 pass
cannot guarantee that the true neighbours are among its candidates (points far closer to each
other than to the data mean, beyond float32 resolution) is redone with float64 products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from reprlab.worker.errors import MetricError

# Candidates taken beyond k+1 from the product pass, re-ranked in float64.
EXTRA_CANDIDATES = 8
# Default memory budget (elements) of one chunk of the squared-distance matrix.
_BLOCK_ELEMENTS = 1 << 25
# Elements of one block of float64 differences in the refinement: cache-sized on the CPU
# (several times faster than large blocks there), large on a GPU (fewer kernel launches).
_REFINE_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 24}


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
    if x.ndim != 2:
        raise MetricError(f"expected a 2-D tensor [n, d], got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n < 2:
        return x, 0
    _, inverse = torch.unique(x, dim=0, return_inverse=True)
    n_unique = int(inverse.max()) + 1
    if n_unique == n:
        return x, 0
    positions = torch.arange(n, device=x.device)
    first = torch.full((n_unique,), n, dtype=positions.dtype, device=x.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    keep = torch.sort(first).values
    return x[keep], n - n_unique


def knn_graph(
    x: Tensor,
    k: int,
    *,
    chunk_size: int | None = None,
    device: torch.device | None = None,
) -> KnnGraph:
    """Exact Euclidean k nearest neighbours of every row of `x` among the rows of `x`.

    Args:
        x: [n, d] points; float64 input is searched in float64, anything else in float32.
        k: neighbours per point (1 <= k < n).
        chunk_size: query rows per product block (memory ~ chunk_size * n); default keeps a
            block near 2**25 elements.
        device: where to compute; default CUDA if available, else CPU.

    Returns:
        The KnnGraph (numpy, CPU) with k+1 columns, column 0 the point itself.

    Raises:
        MetricError: k >= n, k < 1, a non-2-D input, or rows with NaN/inf.
    """
    n = _validate(x, k)
    device = device if device is not None else default_device()
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if chunk_size is None:
        chunk_size = max(1, _BLOCK_ELEMENTS // n)
    if chunk_size < 1:
        raise MetricError(f"chunk_size must be >= 1, got {chunk_size}")
    x = x.to(device)
    m = min(k + 1 + EXTRA_CANDIDATES, n)
    xc = _centered(x, dtype, chunk_size)
    sq_norms = xc.pow(2).sum(1)
    tol = _error_bound(dtype, x.shape[1], device) * (sq_norms + sq_norms.max())
    exact: tuple[Tensor, Tensor] | None = None  # float64 centred copy, made only if needed
    dists, idx = [], []
    for start in range(0, n, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, n), device=device)
        cand, boundary = _candidates(xc, sq_norms, rows, m)
        d64, i64 = _refine(x, rows, cand, k)
        # A non-candidate's true squared distance is >= boundary - tol; if that could undercut
        # the k-th neighbour, the product pass could not rank this row: redo it in float64.
        bad = boundary - tol[rows] <= d64[:, -1].pow(2)
        if m < n and dtype != torch.float64 and bool(bad.any()):
            if exact is None:
                xc64 = _centered(x, torch.float64, chunk_size)
                exact = (xc64, xc64.pow(2).sum(1))
            cand, _ = _candidates(*exact, rows[bad], m)
            d64[bad], i64[bad] = _refine(x, rows[bad], cand, k)
        dists.append(d64.cpu())
        idx.append(i64.cpu())
    return KnnGraph(
        distances=np.ascontiguousarray(torch.cat(dists).numpy(), dtype=np.float64),
        indices=np.ascontiguousarray(torch.cat(idx).numpy(), dtype=np.int64),
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
    if x.is_floating_point():
        finite = torch.isfinite(x).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()
            raise MetricError(
                f"{bad.numel()} of {n} points contain NaN or inf (first: row {int(bad[0])})",
                hint="extract activations in float32; float16 hidden states can overflow",
            )
    return n


def _centered(x: Tensor, dtype: torch.dtype, chunk_size: int) -> Tensor:
    """[n, d] x minus its mean, in `dtype`: distances are unchanged, products lose less."""
    mean = x.sum(0, dtype=torch.float64) / x.shape[0]
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    for s in range(0, x.shape[0], chunk_size):
        out[s : s + chunk_size] = (x[s : s + chunk_size].to(torch.float64) - mean).to(dtype)
    return out


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


def _candidates(xc: Tensor, sq_norms: Tensor, rows: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """[r, m] candidate indices (self included) and [r] largest candidate squared distance."""
    d2 = sq_norms[rows, None] + sq_norms[None, :] - 2.0 * (xc[rows] @ xc.T)
    # The point itself is always a candidate, whatever the rounding of its own distance.
    d2[torch.arange(rows.numel(), device=rows.device), rows] = -torch.inf
    values, cand = torch.topk(d2, m, dim=1, largest=False, sorted=False)
    return cand, values.amax(dim=1).to(torch.float64)


def _refine(x: Tensor, rows: Tensor, cand: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact float64 distances to the candidates, sorted (self first, ties by index)."""
    r, m = cand.shape
    d = x.shape[1]
    d64 = torch.empty((r, m), dtype=torch.float64, device=x.device)
    budget = _REFINE_ELEMENTS.get(x.device.type, _REFINE_ELEMENTS["cuda"])
    step = max(1, budget // (m * d))
    for s in range(0, r, step):
        q = x.index_select(0, rows[s : s + step]).to(torch.float64)
        c = x.index_select(0, cand[s : s + step].reshape(-1)).to(torch.float64).view(-1, m, d)
        d64[s : s + step] = torch.linalg.vector_norm(c.sub_(q[:, None, :]), dim=2)
    # Self first even among exact duplicates; then by distance, ties by neighbour index.
    d64[cand == rows[:, None]] = -1.0
    by_index = torch.argsort(cand, dim=1)
    cand = torch.gather(cand, 1, by_index)
    d64 = torch.gather(d64, 1, by_index)
    order = torch.sort(d64, dim=1, stable=True).indices[:, : k + 1]
    d64 = torch.gather(d64, 1, order)
    d64[:, 0] = 0.0
    return d64, torch.gather(cand, 1, order).to(torch.int64)
