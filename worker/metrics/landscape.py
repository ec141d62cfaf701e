"""The density-peak landscape on a kNN graph: kNN density, ADP clustering, ARI and overlaps.

Implemented in float64 numpy on our `KnnGraph` so that no dadapy output or warning escapes,
and written to give dadapy 0.3.4's numbers on the same neighbours (read from its source):
`compute_density_kNN`, `compute_clustering_ADP` (its compiled `cython_clustering`, step for
step: peaks, preliminary assignment, saddle points, merging order and halo rule),
`return_label_overlap` and `return_data_overlap`. Where dadapy would silently lower a
neighbour count to what it has, we raise. Ties between neighbours at equal distance are decided
by the graph (lower index first), exactly as dadapy does when given the same graph.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.knn import KnnGraph

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# dadapy's default number of neighbours kept (`Base._init_distances`).
DEFAULT_MAXK = 100
Labels = Sequence[Hashable] | npt.NDArray[np.generic]


@dataclass(frozen=True, eq=False)
class Density:
    """Log-density of every point, as dadapy's `log_den` / `log_den_err`.

    Attributes:
        log_den: float64[n], log of the density (normalised by n, see `knn_density`).
        log_den_err: float64[n], its standard error.
        k: neighbours used at every point (dadapy's uniform `kstar`; ADP uses it too).
        intrinsic_dim: the dimension the volumes were computed in.
    """

    log_den: FloatArray
    log_den_err: FloatArray
    k: int
    intrinsic_dim: float


@dataclass(frozen=True, eq=False)
class Clustering:
    """An Advanced Density Peaks partition.

    Attributes:
        labels: int64[n], cluster id of every point (0..n_clusters-1; -1 = halo, only when
            the clustering was asked for with halo=True).
        centers: int64[n_clusters], the point at the density peak of each cluster, by id.
        n_clusters: number of clusters.
        core_fraction: fraction of points that are not halo points under dadapy's halo rule
            (whatever `halo` was), i.e. whose density reaches the highest saddle of their
            cluster; 1.0 with a single cluster.
    """

    labels: IntArray
    centers: IntArray
    n_clusters: int
    core_fraction: float


def knn_density(graph: KnnGraph, k: int, intrinsic_dim: float) -> Density:
    """kNN density estimate, as dadapy `compute_density_kNN(k)` with `intrinsic_dim` set.

    log_den_i = log(k) - log(V_d * r_{i,k}^d) - log(n), with V_d = pi^(d/2) / Gamma(d/2 + 1)
    the volume of the unit d-ball and r_{i,k} the distance to the k-th neighbour;
    log_den_err_i = 1/sqrt(k). Computed with dadapy's operations in its order, so to the
    last bit, except where V_d underflows (d above ~ 400): there dadapy's log(V_d) is -inf
    and ours finite. Points at exactly the same r_k (e.g. mutual k-th neighbours) get the
    same density; ADP then breaks the tie as dadapy does.

    Args:
        graph: kNN graph with at least k neighbours and no duplicate points.
        k: neighbours per point (>= 1).
        intrinsic_dim: d, e.g. a Gride or TwoNN estimate on the same graph (> 0).

    Raises:
        MetricError: k out of range, a bad dimension, or points at distance 0.
    """
    _need_columns(graph, k, "the kNN density")
    if not (math.isfinite(intrinsic_dim) and intrinsic_dim > 0):
        raise MetricError(f"the intrinsic dimension must be a positive number, got {intrinsic_dim}")
    r = np.asarray(graph.distances[:, k], dtype=np.float64)
    if np.any(r <= 0.0):
        raise MetricError(
            f"the kNN density: {int(np.sum(r <= 0.0))} points have their {k}-th neighbour at "
            "distance 0 (duplicate points)",
            hint="remove duplicate rows, or use a larger k",
        )
    d = float(intrinsic_dim)
    log_ball = d / 2.0 * np.log(np.pi) - gammaln((d + 2.0) / 2.0)
    if log_ball > -700.0:  # dadapy's log(exp(.)), kept for bitwise-equal densities and ties
        log_ball = np.log(np.exp(log_ball))
    log_den = np.log(k) - (log_ball + d * np.log(r)) - np.log(graph.n)
    log_den_err = np.full(graph.n, 1.0 / np.sqrt(k))
    return Density(log_den, log_den_err, k, d)


def adp_clustering(
    graph: KnnGraph,
    density: Density,
    Z: float = 1.6,
    halo: bool = False,
    *,
    maxk: int | None = None,
) -> Clustering:
    """Advanced Density Peaks (d'Errico et al. 2021), as dadapy `compute_clustering_ADP`.

    With err = log_den_err, rho = log_den - min(log_den - Z*err) + 1 and g = rho - err:
    the peaks are the points with no larger g among their k = density.k neighbours that are
    not among the k neighbours of a point with a larger g. In decreasing g (ties in numpy's
    `argsort(-g)` order) every other point joins the cluster of its nearest neighbour (within
    maxk) that is a peak or already assigned. A non-peak point p of cluster c is a border
    point towards c' if its first k-neighbour q outside c lies in c' and p is q's nearest
    point of c among q's maxk neighbours (or c has none there); the saddle of {c, c'} is
    their border point of largest g. While some pair is not separated by Z errors
    (rho_peak - rho_saddle < Z * (err_peak + err_saddle) for either peak), the pair with the
    highest saddle merges: the peak with the smaller (rho_peak - rho_saddle) /
    (err_peak + err_saddle) joins the other, which keeps the higher saddle with every third
    cluster. Halo points have rho below the highest saddle of their final cluster. Cluster
    ids number the surviving peaks in index order; ties are broken as dadapy's loops do.

    The result depends on maxk as dadapy's depends on its `maxk`: pass it explicitly to
    keep a clustering independent of how many neighbours the graph holds. dadapy has a
    fallback for a dropped peak with no assigned point among its maxk neighbours (its
    compiled version reads the wrong row there). With a kNN density that cannot happen: the
    dropped peak c is a k-neighbour of a denser point i, and if none of c's maxk >= k
    neighbours were denser, r_k(c) <= d(c, i) <= r_k(i) would make c at least as dense as i.
    We raise if another density gets there.

    Args:
        graph: the kNN graph the density was computed on.
        density: from `knn_density` on this graph.
        Z: merging threshold in standard errors (> 0); larger Z merges more.
        halo: label halo points -1.
        maxk: neighbours used for assignment and saddles (density.k <= maxk <= graph.k);
            default min(100, graph.k) like dadapy's `Data`, or density.k if that is larger.

    Raises:
        MetricError: inconsistent density or graph, or a bad Z or maxk.
    """
    idx, rho, err, g = _adp_inputs(graph, density, Z, maxk)
    k = density.k
    centers = _density_peaks(g, idx[:, 1 : k + 1])
    cluster = _assign_to_peaks(g, idx, centers)
    saddles = _saddles(g, rho, err, idx, k, cluster, centers)
    alive, absorbed, saddles = _merge_peaks(Z, rho[centers], err[centers], saddles)

    root = _follow(absorbed)[cluster]  # the surviving peak of every point
    labels = (np.cumsum(alive) - 1)[root]
    threshold = np.full(len(centers), -np.inf)
    for c, nbrs in enumerate(saddles):
        if nbrs:
            threshold[c] = max(b for b, _ in nbrs.values())
    core = rho >= threshold[root]
    if halo:
        labels = np.where(core, labels, -1).astype(np.int64)
    return Clustering(
        labels=labels,
        centers=centers[alive].astype(np.int64),
        n_clusters=int(alive.sum()),
        core_fraction=float(np.mean(core)),
    )


def adjusted_rand(a: Labels, b: Labels) -> float:
    """Adjusted Rand index of two labelings of the same points (Hubert & Arabie 1985).

    Equal to sklearn.metrics.adjusted_rand_score; labels may be any hashable values.

    Raises:
        MetricError: labelings of different lengths, or empty.
    """
    from sklearn.metrics import adjusted_rand_score

    codes_a, codes_b = _codes(a), _codes(b)
    if codes_a.shape != codes_b.shape or codes_a.size == 0:
        raise MetricError(
            f"the adjusted Rand index needs two labelings of the same points; got {codes_a.size} "
            f"and {codes_b.size} labels"
        )
    return float(adjusted_rand_score(codes_a, codes_b))


def label_overlap(
    graph: KnnGraph,
    labels: Labels,
    *,
    k: int | None = None,
    class_fraction: float | None = None,
    class_balanced: bool = False,
) -> float:
    """Neighbourhood overlap with labels, as dadapy `return_label_overlap(..., avg=True)`.

    o_i = fraction of the k_i nearest neighbours of point i that carry its label. With `k`,
    k_i = k; with `class_fraction` f, k_i = max(1, int(f * n_c)) for the size n_c of i's
    class. The result is the mean of o_i; with class_balanced, the mean weighted by 1/n_c,
    i.e. the mean over classes of each class's mean overlap. Note that dadapy 0.3.4 balances
    by default (`weighted=True`); class_balanced=False is its `weighted=False`. Labels are
    compared as values (dadapy casts them to int first). A neighbour at exactly the distance
    of the k_i-th is in or out by the graph's order (lower index first), as in dadapy.

    Args:
        graph: kNN graph with at least max k_i neighbours.
        labels: [n] one label (any hashable value) per point, in the graph's row order.
        k: neighbours per point; exactly one of k and class_fraction.
        class_fraction: neighbours as a fraction of the size of the point's class, in (0, 1].
        class_balanced: weight every class equally.

    Raises:
        MetricError: both or neither of k / class_fraction, out-of-range values, labels of
            the wrong length, or a graph with too few neighbours.
    """
    overlaps, codes = label_overlaps(graph, labels, k=k, class_fraction=class_fraction)
    if class_balanced:
        return float(np.average(overlaps, weights=1.0 / np.bincount(codes)[codes]))
    return float(np.mean(overlaps))


def label_overlaps(
    graph: KnnGraph, labels: Labels, *, k: int | None = None, class_fraction: float | None = None
) -> tuple[FloatArray, IntArray]:
    """The per-point overlaps o_i of `label_overlap` (same arguments), and the points' class
    codes 0..c-1 (in order of first appearance)."""
    codes = _codes(labels)
    if codes.shape != (graph.n,):
        raise MetricError(f"label overlap needs one label per point: {graph.n}, got {codes.size}")
    counts = np.bincount(codes)
    k_per_point = _overlap_k(counts, k, class_fraction)[codes]
    max_k = int(k_per_point.max())
    _need_columns(graph, max_k, "the label overlap")
    same = codes[graph.indices[:, 1 : max_k + 1]] == codes[:, None]
    same &= np.arange(max_k)[None, :] < k_per_point[:, None]
    return np.asarray(same.sum(axis=1) / k_per_point, dtype=np.float64), codes


def label_overlap_k(labels: Labels, class_fraction: float) -> int:
    """Neighbours a graph needs for `label_overlap(labels, class_fraction=...)`."""
    counts = np.bincount(_codes(labels))
    return int(_overlap_k(counts, None, class_fraction).max())


def data_overlap(graph_a: KnnGraph, graph_b: KnnGraph, k: int) -> float:
    """Neighbourhood overlap of two representations, as dadapy `return_data_overlap(k=k)`.

    The mean over points of |N_a(i) & N_b(i)| / k, with N(i) the k nearest neighbours of
    point i (itself excluded) in each graph. Row i of both graphs must be the same item.
    Neighbours tied at the k-th distance are in or out by the graph's order (lower index
    first), so tied points can lower the overlap of otherwise identical neighbourhoods.

    Raises:
        MetricError: graphs of different sizes, or k out of range for either.
    """
    return float(np.mean(data_overlaps(graph_a, graph_b, k)))


def data_overlaps(graph_a: KnnGraph, graph_b: KnnGraph, k: int) -> FloatArray:
    """The per-point fractions |N_a(i) & N_b(i)| / k whose mean is `data_overlap`."""
    if graph_a.n != graph_b.n:
        raise MetricError(
            f"the data overlap compares the same points in two representations; got {graph_a.n} "
            f"and {graph_b.n} points",
            hint="remove duplicates with the same rows kept in both representations",
        )
    _need_columns(graph_a, k, "the data overlap")
    _need_columns(graph_b, k, "the data overlap")
    both = np.sort(np.hstack([graph_a.indices[:, 1 : k + 1], graph_b.indices[:, 1 : k + 1]]))
    shared = np.sum(both[:, 1:] == both[:, :-1], axis=1)
    return np.asarray(shared / k, dtype=np.float64)


# --- ADP steps (cython_clustering._compute_clustering) ------------------------------------------


def _adp_inputs(
    graph: KnnGraph, density: Density, Z: float, maxk: int | None
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    """Validated [n, maxk+1] neighbours, rho (dadapy's log_den_c), err and g."""
    if not (math.isfinite(Z) and Z > 0):
        raise MetricError(f"ADP's merging threshold Z must be a positive number, got {Z}")
    log_den = np.asarray(density.log_den, dtype=np.float64)
    err = np.asarray(density.log_den_err, dtype=np.float64)
    if log_den.shape != (graph.n,) or err.shape != (graph.n,):
        raise MetricError(
            f"the density has {log_den.size} values for a graph of {graph.n} points",
            hint="compute the density on the same graph as the clustering",
        )
    if not (np.all(np.isfinite(log_den)) and np.all(np.isfinite(err)) and np.all(err > 0)):
        raise MetricError("ADP needs a finite log-density with positive, finite errors")
    if maxk is None:
        maxk = max(density.k, min(DEFAULT_MAXK, graph.k))
    if maxk < density.k:
        raise MetricError(f"ADP's maxk={maxk} must be at least the density's k={density.k}")
    _need_columns(graph, maxk, "ADP clustering")
    rho = log_den - np.min(log_den - Z * err) + 1.0
    g = rho - err
    if np.any(g <= 0):  # dadapy's peak and saddle searches start from 0
        raise MetricError(
            "ADP needs rho - log_den_err > 0 at every point, which errors <= 1 guarantee; got "
            f"errors up to {float(err.max()):.3g}",
            hint="use the density of knn_density (errors 1/sqrt(k)), or a larger Z",
        )
    return np.asarray(graph.indices[:, : maxk + 1], dtype=np.int64), rho, err, g


def _density_peaks(g: FloatArray, nbr: IntArray) -> IntArray:
    """Ascending indices of the density peaks.

    A putative peak has no larger g among its k neighbours; it is dropped if it is one of the
    k neighbours of a point with a larger g.
    """
    putative = np.all(g[nbr] <= g[:, None], axis=1)
    putative[nbr[putative[nbr] & (g[nbr] < g[:, None])]] = False
    return np.flatnonzero(putative)


def _assign_to_peaks(g: FloatArray, idx: IntArray, centers: IntArray) -> IntArray:
    """Preliminary cluster (index into centers) of every point.

    Sequentially in decreasing g (dadapy's `np.argsort(-g)` order), a point takes the cluster
    of its nearest neighbour that is a peak or comes earlier; that makes a parent pointer to a
    point earlier in the order, so the clusters follow by pointer jumping.
    """
    n = g.shape[0]
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-g)] = np.arange(n)
    is_center = np.zeros(n, dtype=bool)
    is_center[centers] = True
    nbr = idx[:, 1:]
    ok = (rank[nbr] < rank[:, None]) | is_center[nbr]
    parent = nbr[np.arange(n), np.argmax(ok, axis=1)]
    parent[centers] = centers
    if np.any(~ok.any(axis=1) & ~is_center):
        # Unreachable for a kNN density (see adp_clustering); dadapy's result is undefined here.
        raise MetricError(
            "ADP: a removed density peak has no denser point among its maxk neighbours",
            hint="use the density of knn_density, or a larger maxk",
        )
    cluster = np.full(n, -1, dtype=np.int64)
    cluster[centers] = np.arange(len(centers))
    return cluster[_follow(parent)]


def _saddles(
    g: FloatArray,
    rho: FloatArray,
    err: FloatArray,
    idx: IntArray,
    k: int,
    cluster: IntArray,
    centers: IntArray,
) -> list[dict[int, tuple[float, float]]]:
    """Per cluster: neighbouring cluster -> (rho, err) of their saddle point.

    A non-peak point p of cluster c whose first k-neighbour q in another cluster c' has p as
    its nearest point of c (among maxk) is a border point; the saddle of {c, c'} is the border
    point of either side with the largest g, the first in dadapy's scan on ties.
    """
    nbk = idx[:, 1 : k + 1]
    other = cluster[nbk] != cluster[:, None]
    other[centers] = False
    p1 = np.flatnonzero(other.any(axis=1))
    pp = nbk[p1, np.argmax(other[p1], axis=1)]
    c, cp = cluster[p1], cluster[pp]
    row = idx[pp, 1:]
    stop = (row == p1[:, None]) | (cluster[row] == c[:, None])
    first = np.argmax(stop, axis=1)
    border = ~stop.any(axis=1) | (row[np.arange(p1.size), first] == p1)
    p1, c, cp = p1[border], c[border], cp[border]
    lo, hi = np.minimum(c, cp), np.maximum(c, cp)
    order = np.lexsort((p1, c, -g[p1], hi, lo))
    lo, hi, p1 = lo[order], hi[order], p1[order]
    first_of_pair = np.ones(p1.shape, dtype=bool)
    first_of_pair[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    saddles: list[dict[int, tuple[float, float]]] = [{} for _ in range(len(centers))]
    for a, b, p in zip(
        lo[first_of_pair].tolist(), hi[first_of_pair].tolist(), p1[first_of_pair], strict=True
    ):
        saddles[a][b] = saddles[b][a] = (float(rho[p]), float(err[p]))
    return saddles


def _merge_peaks(
    Z: float,
    rho_peak: FloatArray,
    err_peak: FloatArray,
    saddles: list[dict[int, tuple[float, float]]],
) -> tuple[npt.NDArray[np.bool_], IntArray, list[dict[int, tuple[float, float]]]]:
    """dadapy's multimodality test: merge insignificant pairs, highest saddle first.

    dadapy rescans all pairs after each merge and takes the first (i < j, row-major) of the
    largest saddle; a heap ordered by (-saddle, i, j) gives the same pair, and only the pairs
    of the absorbing cluster change, so only they are pushed again.

    Returns:
        alive: which peaks survive; absorbed: for a merged peak, the peak it was merged into;
        saddles: the saddles left between surviving peaks.
    """
    rp, ep = rho_peak.tolist(), err_peak.tolist()

    def insignificant(i: int, j: int, rho_s: float, err_s: float) -> bool:
        return rp[i] - rho_s < Z * (ep[i] + err_s) or rp[j] - rho_s < Z * (ep[j] + err_s)

    heap = [
        (-s[0], i, j)
        for i, nbrs in enumerate(saddles)
        for j, s in nbrs.items()
        if i < j and insignificant(i, j, *s)
    ]
    heapq.heapify(heap)
    alive = np.ones(len(saddles), dtype=bool)
    absorbed = np.arange(len(saddles))
    while heap:
        neg_rho, i, j = heapq.heappop(heap)
        s = saddles[i].get(j)
        if s is None or s[0] != -neg_rho or not insignificant(i, j, *s):
            continue  # stale entry: the pair was merged or its saddle replaced
        c1 = (rp[i] - s[0]) / (ep[i] + s[1])
        c2 = (rp[j] - s[0]) / (ep[j] + s[1])
        keep, drop = (j, i) if c1 < c2 else (i, j)
        alive[drop] = False
        absorbed[drop] = keep
        del saddles[keep][drop], saddles[drop][keep]
        for other, s_drop in saddles[drop].items():
            del saddles[other][drop]
            s_keep = saddles[keep].get(other)
            if (s_keep[0] if s_keep else 0.0) < s_drop[0]:
                saddles[keep][other] = saddles[other][keep] = s_drop
                a, b = min(keep, other), max(keep, other)
                if insignificant(a, b, *s_drop):
                    heapq.heappush(heap, (-s_drop[0], a, b))
        saddles[drop] = {}
    return alive, absorbed, saddles


# --- helpers -------------------------------------------------------------------------------------


def _need_columns(graph: KnnGraph, k: int, name: str) -> None:
    if k < 1:
        raise MetricError(f"{name} needs k >= 1 neighbours, got {k}")
    if graph.k < k:
        raise MetricError(
            f"{name} needs the {k}-th nearest neighbour; the graph has k={graph.k}",
            hint=f"build the kNN graph with k >= {k} (at least {k + 1} distinct points)",
        )


def _follow(parent: IntArray) -> IntArray:
    """The root of every node of a forest given by parent pointers (roots point to themselves)."""
    while True:
        jumped = parent[parent]
        if np.array_equal(jumped, parent):
            return parent
        parent = jumped


def _codes(labels: Labels) -> IntArray:
    """int64[n] codes 0..m-1 of any hashable labels, in order of first appearance."""
    seen: dict[Hashable, int] = {}
    items = labels.tolist() if isinstance(labels, np.ndarray) else list(labels)
    try:
        codes = [seen.setdefault(x, len(seen)) for x in items]
    except TypeError as exc:
        raise MetricError(f"labels must be hashable values (str, int, ...): {exc}") from None
    return np.asarray(codes, dtype=np.int64).reshape(-1)


def _overlap_k(counts: IntArray, k: int | None, class_fraction: float | None) -> IntArray:
    """Neighbours per class for the label overlap."""
    if (k is None) == (class_fraction is None):
        raise MetricError("label overlap takes exactly one of k and class_fraction")
    if k is not None:
        if k < 1:
            raise MetricError(f"label overlap needs k >= 1 neighbours, got {k}")
        return np.full(counts.shape, k, dtype=np.int64)
    if class_fraction is None or not 0.0 < class_fraction <= 1.0:
        raise MetricError(f"class_fraction must be in (0, 1], got {class_fraction}")
    return np.maximum(1, (counts * class_fraction).astype(np.int64))
