"""Comparisons of two conditions' states of the same queries, layer by layer.

`compare_states(spec, a, b)` runs one comparison spec of `reprlab.schemas.metrics` on one pair
of [n_items, n_layers, hidden] tensors (row i of both is query i) and returns one or more
labelled curves. Pairing conditions, and mean and spread over seeds, is `worker/aggregate.py`'s.

With the spec's `bootstrap`, every curve also carries, per layer, its statistic on each of the
spec's resamples of the queries (`PairCurves.resampled`). The draws depend only on the number
of queries and the seed, so every pair of one comparison is resampled with the same queries,
and `worker/aggregate.py` takes the percentile interval of the mean over pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from reprlab.schemas.metrics import (
    CkaComparison,
    ComparisonSpec,
    CosineComparison,
    DataOverlapComparison,
    PartitionAriComparison,
    RsaComparison,
)
from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.bootstrap import (
    Statistic,
    ari_statistic,
    cka_statistic,
    mean_statistic,
    rdm_statistic,
    resample_statistics,
)
from reprlab.worker.metrics.cka import LABELS as CKA_LABELS
from reprlab.worker.metrics.cka import cka_matrix, linear_cka
from reprlab.worker.metrics.graphs import GraphCache
from reprlab.worker.metrics.knn import KnnGraph, unique_rows
from reprlab.worker.metrics.landscape import adjusted_rand, data_overlaps
from reprlab.worker.metrics.rsa import COMPARE_LABELS, RDM_LABELS, compare_rdms, rdm, standardise
from reprlab.worker.metrics.suite import landscape_clusters, landscape_needs

FloatArray = npt.NDArray[np.float64]
Values = list[float | None]
# Per layer: a curve's statistic on each bootstrap resample, None where the value is None.
Resamples = list[FloatArray | None]
_Layer = TypeVar("_Layer")


@dataclass(frozen=True)
class _Graphs:
    """Where a comparison's kNN graphs come from: the cache, under (name, layer) of each side."""

    cache: GraphCache
    names: tuple[str, str]
    device: torch.device


@dataclass(frozen=True)
class PairCurves:
    """One curve of a comparison between two analysed points.

    Attributes:
        params: what identifies the curve among the comparison's curves (e.g. {"k": 30}).
        label: the exact name, e.g. "CKA, linear, debiased".
        values: one value per layer, None where undefined (`warnings` says why).
        matrix: layer x layer values when the comparison gives them.
        warnings: why values are None.
        resampled: with the spec's bootstrap, per layer the statistic on each of the
            `bootstrap.n` resamples of the queries ([n_boot], NaN where undefined).
    """

    params: dict[str, Any]
    label: str
    values: Values
    matrix: list[Values] | None = None
    warnings: tuple[str, ...] = ()
    resampled: Resamples | None = None


def compare_states(
    spec: ComparisonSpec,
    a: Tensor,
    b: Tensor,
    layers: list[int],
    device: torch.device,
    *,
    graphs: GraphCache | None = None,
    names: tuple[str, str] = ("a", "b"),
) -> list[PairCurves]:
    """Every curve of one comparison between states `a` and `b` ([n, n_layers, hidden]).

    Args:
        spec: the comparison.
        a, b: the two analysed points' states of the same queries.
        layers: the layer index of each state column.
        device: where kNN graphs are computed.
        graphs: the job's graph cache, where neighbour-based comparisons find (or leave) each
            layer's graph under (name, layer); None: every graph is computed here.
        names: the result names of a and b (keys of `graphs`).
    """
    sources = _Graphs(graphs if graphs is not None else GraphCache(0), names, device)
    if a.shape[:2] != b.shape[:2]:
        raise MetricError(
            f"cannot compare states of shape {tuple(a.shape)} and {tuple(b.shape)}: the two "
            "conditions must analyse the same queries at the same layers"
        )
    if isinstance(spec, CosineComparison):
        return [_cosine(spec, a, b, layers)]
    if isinstance(spec, CkaComparison):
        return [_cka(spec, a, b, layers)]
    if isinstance(spec, DataOverlapComparison):
        return _data_overlap(spec, a, b, layers, sources)
    if isinstance(spec, PartitionAriComparison):
        return [_partition_ari(spec, a, b, layers, sources)]
    if isinstance(spec, RsaComparison):
        return [_rsa(spec, a, b, layers)]
    raise MetricError(f"unknown comparison {spec.metric!r}")


def cosine_per_layer(a: Tensor, b: Tensor) -> list[float]:
    """Mean over items of cos(a_i, b_i) at each layer; inputs [n_items, n_layers, hidden]."""
    return [float(v) for v in _item_cosines(a, b).mean(dim=0)]


def _item_cosines(a: Tensor, b: Tensor) -> Tensor:
    """cos(a_i, b_i) of every item at every layer: [n_items, n_layers] float64."""
    if a.shape != b.shape:
        raise MetricError(f"states differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)


def _cosine(spec: CosineComparison, a: Tensor, b: Tensor, layers: list[int]) -> PairCurves:
    cos = _item_cosines(a, b)
    means, per_item = cos.mean(dim=0), cos.cpu().numpy()
    values, resampled, _ = _each_layer(
        spec,
        layers,
        a.shape[0],
        lambda j: float(means[j]),
        lambda j: mean_statistic(per_item[:, j]),
    )
    label = "cosine similarity of the same query's states, mean over queries"
    return PairCurves({}, label, values, resampled=resampled)


def _layers(x: Tensor) -> list[npt.NDArray[np.float64]]:
    return [x[:, j, :].double().cpu().numpy() for j in range(x.shape[1])]


def _resample(spec: ComparisonSpec, n: int, statistic: Statistic) -> FloatArray:
    """The statistic on the spec's bootstrap resamples of the n queries (same draws for every
    pair: they depend only on n, bootstrap.n and bootstrap.seed)."""
    if spec.bootstrap is None:
        raise ValueError("this comparison asks for no bootstrap")
    return resample_statistics(n, statistic, n_boot=spec.bootstrap.n, seed=spec.bootstrap.seed)


def _each_layer(
    spec: ComparisonSpec,
    layers: list[int],
    n: int,
    value: Callable[[int], float],
    statistic: Callable[[int], Statistic],
) -> tuple[Values, Resamples | None, tuple[str, ...]]:
    """value(j) for every layer index j; a MetricError makes that layer None with the reason.

    With the spec's bootstrap, also `statistic(j)` resampled where the value is defined
    (`statistic(j)` is called right after `value(j)`).
    """
    values: Values = []
    resampled: Resamples = []
    warnings: list[str] = []
    for j, layer in enumerate(layers):
        try:
            v: float | None = value(j)
        except MetricError as exc:
            v = None
            warnings.append(f"layer {layer}: {exc.message}")
        values.append(v)
        if spec.bootstrap is not None:
            resampled.append(None if v is None else _resample(spec, n, statistic(j)))
    return values, resampled if spec.bootstrap is not None else None, tuple(warnings)


def _cka(spec: CkaComparison, a: Tensor, b: Tensor, layers: list[int]) -> PairCurves:
    xs, ys = _layers(a), _layers(b)
    values, resampled, warnings = _each_layer(
        spec,
        layers,
        a.shape[0],
        lambda j: linear_cka(xs[j], ys[j], debiased=spec.debiased),
        lambda j: cka_statistic(xs[j], ys[j], debiased=spec.debiased),
    )
    matrix: list[Values] | None = None
    if spec.across_layers:
        try:
            full = cka_matrix(xs, ys, debiased=spec.debiased)
            matrix = [[float(v) if np.isfinite(v) else None for v in row] for row in full]
        except MetricError as exc:
            warnings += (f"layer x layer CKA: {exc.message}",)
    params = {"debiased": spec.debiased}
    return PairCurves(params, CKA_LABELS[spec.debiased], values, matrix, warnings, resampled)


def _common_distinct(a: Tensor, b: Tensor) -> Tensor | None:
    """Rows distinct in both a and b (first occurrences), None for every row: neighbour sets
    need distinct points."""
    keep = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
    for x in (a, b):
        first = unique_rows(x)
        if first is not None:
            mask = torch.zeros_like(keep)
            mask[first] = True
            keep &= mask
    return None if bool(keep.all()) else torch.nonzero(keep).flatten()


def _per_layer(
    a: Tensor,
    b: Tensor,
    layers: list[int],
    k: int,
    graphs: _Graphs,
    fn: Callable[[KnnGraph, KnnGraph, npt.NDArray[np.int64]], _Layer],
) -> tuple[list[_Layer | None], list[str]]:
    """fn(graph of a, graph of b, rows) at every layer; None where undefined, with the reason.

    The k-neighbour graphs are built on the rows distinct in both a and b (`rows`: their query
    indices), and come from the job's graph cache when the per-layer metrics left them there.
    """
    out: list[_Layer | None] = []
    warnings: list[str] = []
    for j, layer in enumerate(layers):
        xa, xb = a[:, j, :].to(graphs.device), b[:, j, :].to(graphs.device)
        rows = _common_distinct(xa, xb)
        picked = np.arange(a.shape[0]) if rows is None else rows.cpu().numpy()
        if k >= picked.size:
            warnings.append(
                f"layer {layer}: too few distinct points: {k + 1} needed, {picked.size} common"
            )
            out.append(None)
            continue
        ga, gb = (
            graphs.cache.graph((name, layer), x, k, rows=rows, device=graphs.device)
            for name, x in zip(graphs.names, (xa, xb), strict=True)
        )
        try:
            out.append(fn(ga, gb, picked))
        except MetricError as exc:
            warnings.append(f"layer {layer}: {exc.message}")
            out.append(None)
    return out, warnings


def _on_items(
    n: int, rows: npt.NDArray[np.int64], per_row: npt.ArrayLike, fill: float
) -> npt.NDArray[Any]:
    """Values of a graph's rows as one value per query (`fill` for the queries left out)."""
    values = np.asarray(per_row)
    out = np.full(n, fill, dtype=values.dtype)
    out[rows] = values
    return out


def _data_overlap(
    spec: DataOverlapComparison, a: Tensor, b: Tensor, layers: list[int], graphs: _Graphs
) -> list[PairCurves]:
    n = a.shape[0]
    ks = [k for k in spec.ks if k < n]
    dropped = [k for k in spec.ks if k >= n]
    curves: list[PairCurves] = []
    if ks:
        # Per layer: the graphs' query indices and, per k, each one's overlap chi.
        per_layer, warnings = _per_layer(
            a, b, layers, max(ks), graphs,
            lambda ga, gb, rows: (rows, [data_overlaps(ga, gb, k) for k in ks]),
        )  # fmt: skip
        for i, k in enumerate(ks):
            values: Values = [None if p is None else float(np.mean(p[1][i])) for p in per_layer]
            resampled: Resamples | None = None
            if spec.bootstrap is not None:
                resampled = [
                    None
                    if p is None
                    else _resample(spec, n, mean_statistic(_on_items(n, p[0], p[1][i], np.nan)))
                    for p in per_layer
                ]
            curves.append(
                PairCurves(
                    {"k": k},
                    f"data overlap chi (k={k})",
                    values,
                    warnings=tuple(warnings),
                    resampled=resampled,
                )
            )
    for k in dropped:
        why = f"data overlap k={k} needs more than {k} queries; there are {n}"
        curves.append(
            PairCurves(
                {"k": k},
                f"data overlap chi (k={k})",
                [None] * len(layers),
                warnings=(why,),
                resampled=None if spec.bootstrap is None else [None] * len(layers),
            )
        )
    return curves


def _partition_ari(
    spec: PartitionAriComparison, a: Tensor, b: Tensor, layers: list[int], graphs: _Graphs
) -> PairCurves:
    n = a.shape[0]

    def partitions(
        ga: KnnGraph, gb: KnnGraph, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], ...]:
        ca, cb = (
            landscape_clusters(g, spec.density_k, spec.intrinsic_dim, spec.Z, spec.halo, spec.maxk)
            for g in (ga, gb)
        )
        return rows, ca[0].labels, cb[0].labels

    per_layer, warnings = _per_layer(a, b, layers, graph_k(spec, n), graphs, partitions)
    values: Values = [None if p is None else adjusted_rand(p[1], p[2]) for p in per_layer]
    resampled: Resamples | None = None
    if spec.bootstrap is not None:
        # Cluster ids shifted by one (the halo, -1, becomes 0): -1 marks a query left out.
        resampled = [
            None
            if p is None
            else _resample(spec, n, ari_statistic(*(_on_items(n, p[0], c + 1, -1) for c in p[1:])))
            for p in per_layer
        ]
    label = f"ARI between the ADP partitions (Z={spec.Z:g}, density k={spec.density_k})"
    return PairCurves({}, label, values, warnings=tuple(warnings), resampled=resampled)


def graph_k(spec: ComparisonSpec, n: int) -> int:
    """Neighbours the comparison's kNN graphs need on n queries; 0 if it uses none."""
    if isinstance(spec, DataOverlapComparison):
        return max((k for k in spec.ks if k < n), default=0)
    if isinstance(spec, PartitionAriComparison):
        return landscape_needs(spec.density_k, spec.intrinsic_dim, spec.maxk, n)
    return 0


def _rsa(spec: RsaComparison, a: Tensor, b: Tensor, layers: list[int]) -> PairCurves:
    xs, ys = _layers(a), _layers(b)

    @lru_cache(maxsize=1)  # the value and the statistic of a layer share its RDMs
    def rdms(j: int) -> tuple[FloatArray, FloatArray]:
        xa, xb = (standardise(xs[j]), standardise(ys[j])) if spec.standardise else (xs[j], ys[j])
        return rdm(xa, spec.rdm), rdm(xb, spec.rdm)

    values, resampled, warnings = _each_layer(
        spec,
        layers,
        a.shape[0],
        lambda j: compare_rdms(*rdms(j), spec.compare),
        lambda j: rdm_statistic(*rdms(j), spec.compare),
    )
    label = (
        f"RSA: {COMPARE_LABELS[spec.compare]} of the two conditions' RDMs "
        f"({RDM_LABELS[spec.rdm]}{', standardised features' if spec.standardise else ''})"
    )
    params = {"rdm": spec.rdm, "compare": spec.compare}
    return PairCurves(params, label, values, warnings=warnings, resampled=resampled)
