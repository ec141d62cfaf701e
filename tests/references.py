"""Helpers for calling the reference implementations the metrics are tested against."""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import warnings
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")


def quietly(fn: Callable[[], T]) -> T:
    """Run a reference call (dadapy prints and warns freely) without its prints and warnings."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


# --- CKA and ARI resamples by brute force (tests of worker/metrics/bootstrap_pairs.py) ---


def copy_free_hsic(
    kx: npt.NDArray[np.float64], ky: npt.NDArray[np.float64], items: npt.NDArray[np.int64],
    debiased: bool,
) -> float:  # fmt: skip
    """HSIC of a resample by brute force, from the Gram matrices of its drawn rows: the mean
    of h(p, q, r, s) = kx_pq ky_pq + kx_pq ky_rs - 2 kx_pq ky_pr over the 4-tuples of draws
    in which any two positions hold draws of different items or (biased only) the same draw."""
    m = len(items)
    draw = np.arange(m)
    allowed = items[:, None] != items[None, :]
    if not debiased:
        allowed |= draw[:, None] == draw[None, :]
    pos = np.ix_(draw, draw, draw, draw)
    mask = np.ones((m,) * 4, dtype=bool)
    for i, j in itertools.combinations(range(4), 2):
        mask &= allowed[pos[i], pos[j]]
    p, q, r, s = pos
    h = kx[p, q] * (ky[p, q] + ky[r, s] - 2 * ky[p, r])
    return float(h[mask].mean())


def copy_free_cka(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], items: npt.NDArray[np.int64],
    debiased: bool,
) -> float:  # fmt: skip
    """Linear CKA of the drawn rows x[items], y[items] with pairs of copies left out (brute
    force; no centring: HSIC's kernel h averages to the same over shifted features)."""
    xs, ys = x[items], y[items]
    kx, ky = xs @ xs.T, ys @ ys.T
    kl, kk, ll = (copy_free_hsic(a, b, items, debiased) for a, b in ((kx, ky), (kx, kx), (ky, ky)))
    return kl / math.sqrt(kk * ll)


def copy_free_ari(
    a: npt.NDArray[np.int64], b: npt.NDArray[np.int64], items: npt.NDArray[np.int64]
) -> float:
    """sklearn's ARI formula on the pair confusion matrix counted over the ordered pairs of
    draws of different items labelled (>= 0) in both labelings."""
    ia, ib = a[items], b[items]
    labelled = (ia >= 0) & (ib >= 0)
    pairs = (items[:, None] != items[None, :]) & labelled[:, None] & labelled[None, :]
    same_a, same_b = ia[:, None] == ia[None, :], ib[:, None] == ib[None, :]
    tp, fn = float((pairs & same_a & same_b).sum()), float((pairs & same_a & ~same_b).sum())
    fp, tn = float((pairs & ~same_a & same_b).sum()), float((pairs & ~same_a & ~same_b).sum())
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
