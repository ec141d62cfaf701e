"""Bootstrap statistics of pairs of items: the ARI, linear CKA and RDM comparisons on resamples.

Each statistic maps a batch of resamples of item indices to its value on each resample
(`bootstrap.Statistic`, evaluated by `bootstrap.resample_statistics`), NaN where it is
undefined. Two conditions' states of the same queries are resampled together, query by query.
These statistics leave out the pairs of copies of one item that a resample draws: copies agree
with each other by construction, and counting them as pairs of different items would push
these statistics up on every resample. The ARI leaves the copies' pairs out of the contingency
table's pair counts (`ari_statistic`); CKA averages its HSIC terms over the tuples of draws of
different items, summed from each resample's draw counts (`cka_statistic`, `_Contractions`);
an RDM comparison takes the entries of the pairs of different items (`rdm_statistic`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.rsa import CompareMethod, correlate

if TYPE_CHECKING:
    from reprlab.worker.metrics.bootstrap import Statistic

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# Values held at once by a batch of resamples (or a block of columns), to bound memory.
_BATCH_ELEMENTS = 1 << 22


def ari_statistic(codes_a: npt.ArrayLike, codes_b: npt.ArrayLike) -> Statistic:
    """Adjusted Rand index of two fixed labelings on each resample, over the pairs of draws of
    different items.

    A resample with w_i copies of item i has the contingency table of the drawn items. Its
    w_i (w_i - 1) / 2 pairs of copies agree in both labelings by construction and would raise
    the ARI, so they are left out of their cell, row and column pair counts and of the total,
    as the ARI of the data leaves out the pair of an item with itself: with every w_i = 1 this
    is sklearn's `adjusted_rand_score`. (In sklearn's pair confusion matrix only the pairs
    together in both labelings lose them.) Items whose code is -1 in either labeling were not
    clustered and are left out.

    Args:
        codes_a, codes_b: [n] int codes >= 0 of the two labelings, -1 for an item left out.
    """
    a = np.asarray(codes_a, dtype=np.int64)
    b = np.asarray(codes_b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1 or not ((a >= 0) & (b >= 0)).any():
        raise MetricError("the resampled ARI needs two labelings of the same, labelled items")
    keep = ((a >= 0) & (b >= 0)).astype(np.float64)
    n, na, nb = a.size, int(a.max()) + 1, int(b.max()) + 1
    cells = na * nb
    cell = np.where(keep > 0, a * nb + b, cells)  # one more cell collects the items left out

    def statistic(idx: IntArray) -> FloatArray:
        out = []
        rows = max(1, _BATCH_ELEMENTS // (cells + 1 + n))
        for s in range(0, idx.shape[0], rows):
            part = idx[s : s + rows]
            m = part.shape[0]
            shift = np.arange(m)[:, None]
            counts = np.bincount(
                (cell[part] + (cells + 1) * shift).ravel(), minlength=m * (cells + 1)
            )
            w = np.bincount((part + n * shift).ravel(), minlength=m * n).reshape(m, n)
            copies = (w * (w - 1)) @ keep  # ordered pairs of copies of a labelled item
            tables = counts.reshape(m, cells + 1)[:, :cells].reshape(m, na, nb)
            out.append(_ari(tables.astype(np.float64), copies))
        return np.concatenate(out)

    return statistic


def _ari(tables: FloatArray, copies: FloatArray) -> FloatArray:
    """ARI of each contingency table [b, na, nb] by sklearn's pair confusion matrix (ordered
    pairs), without the `copies` [b] ordered pairs of copies (all of them together in both)."""
    total = tables.sum(axis=(1, 2))
    squares = (tables**2).sum(axis=(1, 2))
    fn = (tables.sum(axis=2) ** 2).sum(axis=1) - squares  # pairs together in a only
    fp = (tables.sum(axis=1) ** 2).sum(axis=1) - squares  # pairs together in b only
    tp = squares - total - copies
    tn = total**2 - fn - fp - squares
    den = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    perfect = (fn == 0) & (fp == 0)
    ari = np.divide(2.0 * (tp * tn - fn * fp), den, out=np.ones_like(den), where=~perfect)
    return np.where(total > 0, ari, np.nan)


def cka_statistic(x: npt.ArrayLike, y: npt.ArrayLike, debiased: bool = False) -> Statistic:
    """Linear CKA (`cka.linear_cka`) of the resampled rows of x and y, over the pairs of draws
    of different items.

    With K = X X^T, L = Y Y^T and h(p, q, r, s) = K_pq L_pq + K_pq L_rs - 2 K_pq L_pr, the
    biased HSIC is the mean of h over all 4-tuples of rows (a V-statistic, the diagonal
    p = q included) and the debiased one the mean over 4-tuples of different rows (Song et
    al.'s U-statistic, the diagonal left out). Two draws of one item are the same row twice,
    and counting them as a pair of different rows raises CKA on a resample. So on a resample
    h is averaged over the 4-tuples of draws in which any two positions hold draws of
    different items or, biased only, the same draw: pairs of copies get the diagonal's
    treatment, left out of the debiased estimator and, in the biased one, not counted as pairs
    of different rows (a tuple revisits an item only through the same draw). With every item
    drawn once this is `linear_cka` on the data; like it, it is unchanged by shifting x or y.

    Costs O(b n^2) per batch of b resamples, from the draw counts (`_Contractions`); memory
    the two n x n Gram matrices and blocks of their element-wise products.

    Args:
        x: [n, d1] and y: [n, d2] representations of the same items (already valid for
            `linear_cka`).
        debiased: the debiased HSIC estimator.
    """
    xc = np.asarray(x, dtype=np.float64)
    yc = np.asarray(y, dtype=np.float64)
    xc, yc = xc - xc.mean(axis=0), yc - yc.mean(axis=0)  # for precision only
    kernels = {"K": xc @ xc.T, "L": yc @ yc.T}
    n = xc.shape[0]
    rows = max(1, _BATCH_ELEMENTS // (16 * n))  # 16: the weight vectors and products held

    def statistic(idx: IntArray) -> FloatArray:
        out = []
        for s in range(0, idx.shape[0], rows):
            part = idx[s : s + rows]
            m = part.shape[0]
            counts = np.bincount((part + n * np.arange(m)[:, None]).ravel(), minlength=m * n)
            terms = _Contractions(kernels, counts.reshape(m, n).astype(np.float64), debiased)
            kl, kk, ll = (terms.hsic(*pair) for pair in (("K", "L"), ("K", "K"), ("L", "L")))
            ok = (kk > 0) & (ll > 0)  # False where NaN: no allowed tuple
            out.append(
                np.divide(kl, np.sqrt(np.where(ok, kk * ll, 1.0)), out=np.full(m, np.nan), where=ok)
            )
        return np.concatenate(out)

    return statistic


def _set_partitions(items: tuple[int, ...]) -> list[tuple[tuple[int, ...], ...]]:
    """Every partition of `items` into blocks (15 for four items)."""
    if not items:
        return [()]
    first, out = items[0], []
    for rest in _set_partitions(items[1:]):
        out.append(((first,), *rest))
        out += [(*rest[:i], (first, *rest[i]), *rest[i + 1 :]) for i in range(len(rest))]
    return out


# The set partitions of h's four positions p, q, r, s = 0, 1, 2, 3, and h as a sum of
# coefficient x K[K's positions] x L[L's positions].
_PARTITIONS = _set_partitions((0, 1, 2, 3))
_H_TERMS = ((1.0, (0, 1), (0, 1)), (1.0, (0, 1), (2, 3)), (-2.0, (0, 1), (0, 2)))
# Weight of a block of k = 1, 2, 3, 4 positions held by one item drawn w times, as the
# coefficients of w, w^2, ...: the cumulants kappa_k of the moments m_k, where m_k is the
# number of ways k positions may hold draws of one item: biased, only one and the same draw
# (m_k = w); debiased, only k = 1 (m_1 = w, m_k = 0).
_BLOCK_WEIGHTS = {
    False: ((1.0,), (1.0, -1.0), (1.0, -3.0, 2.0), (1.0, -7.0, 12.0, -6.0)),
    True: ((1.0,), (0.0, -1.0), (0.0, 0.0, 2.0), (0.0, 0.0, 0.0, -6.0)),
}


def _weights(w: FloatArray, coefs: tuple[float, ...]) -> FloatArray:
    """coefs[0] w + coefs[1] w^2 + ..., element-wise (Horner)."""
    out = np.zeros_like(w)
    for c in reversed(coefs):
        out = (out + c) * w
    return out


class _Contractions:
    """Sums of h over the copy-free 4-tuples of draws of a batch of resamples.

    A resample's sum over its allowed tuples of draws is a sum over 4-tuples of items, each
    weighted by its number of allowed draw tuples: prod over its distinct items u of m_k(w_u),
    k the positions u holds. Moebius inversion on the lattice of set partitions of the four
    positions turns it into a sum over partitions sigma of sums over the item tuples constant
    on sigma's blocks (different blocks may hold the same item), each block of k positions
    on item u weighted kappa_k(w_u) (`_BLOCK_WEIGHTS`). Each of those is a product of K, L,
    their diagonals and element-wise products with weight vectors: O(n^2) per resample.
    """

    def __init__(self, kernels: dict[str, FloatArray], w: FloatArray, debiased: bool) -> None:
        self.kernels = kernels
        self.diag = {name: np.diag(k) for name, k in kernels.items()}
        self.g = [_weights(w, coefs) for coefs in _BLOCK_WEIGHTS[debiased]]
        self.sums = [g.sum(axis=1) for g in self.g]
        self._products: dict[tuple[str, ...], FloatArray] = {}
        # The number of allowed tuples: the same sums of h = 1.
        self.tuples = sum(
            np.prod([self.sums[len(s) - 1] for s in sigma], axis=0) for sigma in _PARTITIONS
        )

    def hsic(self, x: str, y: str) -> FloatArray:
        """HSIC of kernels x and y on each resample (mean of h over the allowed tuples)."""
        total = np.zeros(self.g[0].shape[0])
        for sigma in _PARTITIONS:
            block = {p: i for i, s in enumerate(sigma) for p in s}
            size = [len(s) - 1 for s in sigma]  # block i's weights: self.g[size[i]]
            for coef, (p, q), (r, s) in _H_TERMS:
                ex, ey = (block[p], block[q]), (block[r], block[s])
                free = [size[i] for i in range(len(sigma)) if i not in (*ex, *ey)]
                value = self._pair(x, y, ex, ey, size)
                for k in free:
                    value = value * self.sums[k]
                total += coef * value
        return np.divide(total, self.tuples, out=np.full_like(total, np.nan), where=self.tuples > 0)

    def _pair(
        self, x: str, y: str, ex: tuple[int, int], ey: tuple[int, int], size: list[int]
    ) -> FloatArray:
        """Sum over the item tuples of the weighted x entry on blocks ex times y's on ey."""
        g = self.g
        if not set(ex) & set(ey):
            return self._edge(x, ex, size) * self._edge(y, ey, size)
        if set(ex) == set(ey):
            u, v = ex
            if u == v:
                return np.einsum("bi,i,i->b", g[size[u]], self.diag[x], self.diag[y])
            lo, hi = sorted((size[u], size[v]))
            return np.einsum("bi,bi->b", g[hi], self._product((x, y), lo))
        (c,) = set(ex) & set(ey)
        fx, fy = (self._end(name, e, c, size) for name, e in ((x, ex), (y, ey)))
        return np.einsum("bi,bi,bi->b", g[size[c]], fx, fy)

    def _edge(self, x: str, e: tuple[int, int], size: list[int]) -> FloatArray:
        u, v = e
        if u == v:
            return self.g[size[u]] @ self.diag[x]
        lo, hi = sorted((size[u], size[v]))
        return np.einsum("bi,bi->b", self.g[hi], self._product((x,), lo))

    def _end(self, x: str, e: tuple[int, int], c: int, size: list[int]) -> FloatArray:
        """Per item i on block c: x_ii if e is a loop on c, else (x g_other)_i."""
        other = e[1] if e[0] == c else e[0]
        if other == c:
            return np.broadcast_to(self.diag[x], self.g[0].shape)
        return self._product((x,), size[other])

    def _product(self, names: tuple[str, ...], k: int) -> FloatArray:
        """g_k times the kernel, or times the element-wise product of two, in column blocks."""
        key = (*names, str(k))
        if key not in self._products:
            mats = [self.kernels[name] for name in names]
            n = mats[0].shape[0]
            out = np.empty_like(self.g[k])
            step = max(1, _BATCH_ELEMENTS // n)
            for c in range(0, n, step):
                block = mats[0][:, c : c + step]
                for other in mats[1:]:
                    block = block * other[:, c : c + step]
                out[:, c : c + step] = self.g[k] @ block
            self._products[key] = out
        return self._products[key]


def rdm_statistic(model: npt.ArrayLike, other: npt.ArrayLike, method: CompareMethod) -> Statistic:
    """An RDM comparison on each resample of the items, on the pairs of different items.

    A pair of copies of one item has dissimilarity 0 in both RDMs by construction and is left
    out (as rsatoolbox's `bootstrap_sample_pattern`). Costs one comparison of about n(n-1)/2
    pairs per resample.

    Args:
        model, other: condensed RDMs of the same n items (scipy `squareform` order).
        method: as `rsa.compare_rdms`.

    Raises:
        MetricError: RDMs of different lengths, or not condensed RDMs of 3 or more items.
    """
    a = np.asarray(model, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise MetricError(f"RDMs of shapes {a.shape} and {b.shape} cannot be compared")
    n = rdm_items(a.size)
    upper = np.triu_indices(n, k=1)

    def statistic(idx: IntArray) -> FloatArray:
        out = np.full(idx.shape[0], np.nan)
        for r, items in enumerate(idx):
            i, j = items[upper[0]], items[upper[1]]
            keep = i != j
            lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
            pos = n * lo - lo * (lo + 1) // 2 + (hi - lo - 1)
            try:
                out[r] = correlate(a[pos], b[pos], method)
            except MetricError:
                pass  # undefined on this resample (e.g. a constant hypothesis)
        return out

    return statistic


def rdm_items(length: int) -> int:
    """The n of a condensed RDM of `length` entries; MetricError unless n >= 3."""
    n = int(round((1 + np.sqrt(1 + 8 * length)) / 2))
    if n * (n - 1) // 2 != length or n < 3:
        raise MetricError(f"{length} is not the length of a condensed RDM of 3 or more items")
    return n
