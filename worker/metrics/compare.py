"""Comparisons of two conditions' states of the same queries, layer by layer.

`compare_states(spec, a, b)` runs one comparison spec of `reprlab.schemas.metrics` on one pair
of [n_items, n_layers, hidden] tensors (row i of both is query i) and returns one or more
labelled curves. Pairing conditions, and mean and spread over seeds, is `worker/aggregate.py`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from reprlab.worker.metrics.cka import LABELS as CKA_LABELS
from reprlab.worker.metrics.cka import cka_matrix, linear_cka
from reprlab.worker.metrics.knn import KnnGraph, knn_graph, unique_rows
from reprlab.worker.metrics.landscape import adjusted_rand, data_overlap
from reprlab.worker.metrics.rsa import COMPARE_LABELS, RDM_LABELS, compare_rdms, rdm, standardise
from reprlab.worker.metrics.suite import landscape_clusters, landscape_needs

Values = list[float | None]


@dataclass(frozen=True)
class PairCurves:
    """One curve of a comparison between two analysed points.

    Attributes:
        params: what identifies the curve among the comparison's curves (e.g. {"k": 30}).
        label: the exact name, e.g. "CKA, linear, debiased".
        values: one value per layer, None where undefined (`warnings` says why).
        matrix: layer x layer values when the comparison gives them.
        warnings: why values are None.
    """

    params: dict[str, Any]
    label: str
    values: Values
    matrix: list[Values] | None = None
    warnings: tuple[str, ...] = ()


def compare_states(
    spec: ComparisonSpec, a: Tensor, b: Tensor, layers: list[int], device: torch.device
) -> list[PairCurves]:
    """Every curve of one comparison between states `a` and `b` ([n, n_layers, hidden])."""
    if a.shape[:2] != b.shape[:2]:
        raise MetricError(
            f"cannot compare states of shape {tuple(a.shape)} and {tuple(b.shape)}: the two "
            "conditions must analyse the same queries at the same layers"
        )
    if isinstance(spec, CosineComparison):
        return [_cosine(a, b)]
    if isinstance(spec, CkaComparison):
        return [_cka(spec, a, b, layers)]
    if isinstance(spec, DataOverlapComparison):
        return _data_overlap(spec, a, b, layers, device)
    if isinstance(spec, PartitionAriComparison):
        return [_partition_ari(spec, a, b, layers, device)]
    if isinstance(spec, RsaComparison):
        return [_rsa(spec, a, b, layers)]
    raise MetricError(f"unknown comparison {spec.metric!r}")


def cosine_per_layer(a: Tensor, b: Tensor) -> list[float]:
    """Mean over items of cos(a_i, b_i) at each layer; inputs [n_items, n_layers, hidden]."""
    if a.shape != b.shape:
        raise MetricError(f"states differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)
    return [float(v) for v in cos.mean(dim=0)]


def _cosine(a: Tensor, b: Tensor) -> PairCurves:
    values: Values = list(cosine_per_layer(a, b))
    return PairCurves({}, "cosine similarity of the same query's states, mean over queries", values)


def _layers(x: Tensor) -> list[npt.NDArray[np.float64]]:
    return [x[:, j, :].double().cpu().numpy() for j in range(x.shape[1])]


def _each_layer(layers: list[int], fn: Callable[[int], float]) -> tuple[Values, tuple[str, ...]]:
    """fn(j) for every layer index j; a MetricError makes that layer None with the reason."""
    values: Values = []
    warnings: list[str] = []
    for j, layer in enumerate(layers):
        try:
            values.append(fn(j))
        except MetricError as exc:
            values.append(None)
            warnings.append(f"layer {layer}: {exc.message}")
    return values, tuple(warnings)


def _cka(spec: CkaComparison, a: Tensor, b: Tensor, layers: list[int]) -> PairCurves:
    xs, ys = _layers(a), _layers(b)
    values, warnings = _each_layer(
        layers, lambda j: linear_cka(xs[j], ys[j], debiased=spec.debiased)
    )
    matrix: list[Values] | None = None
    if spec.across_layers:
        try:
            full = cka_matrix(xs, ys, debiased=spec.debiased)
            matrix = [[float(v) if np.isfinite(v) else None for v in row] for row in full]
        except MetricError as exc:
            warnings += (f"layer x layer CKA: {exc.message}",)
    params = {"debiased": spec.debiased}
    return PairCurves(params, CKA_LABELS[spec.debiased], values, matrix, warnings)


def _common_distinct(a: Tensor, b: Tensor) -> Tensor:
    """Rows distinct in both a and b (first occurrences): neighbour sets need distinct points."""
    keep = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
    for x in (a, b):
        first = unique_rows(x)
        if first is not None:
            mask = torch.zeros_like(keep)
            mask[first] = True
            keep &= mask
    return torch.nonzero(keep).flatten()


def _per_layer(
    a: Tensor,
    b: Tensor,
    layers: list[int],
    device: torch.device,
    k: int,
    fn: Callable[[KnnGraph, KnnGraph], list[float | None]],
    n_out: int,
) -> tuple[list[Values], list[str]]:
    """Graphs of a and b at every layer on their common distinct rows, then `fn` on them."""
    out: list[Values] = [[] for _ in range(n_out)]
    warnings: list[str] = []
    for j, layer in enumerate(layers):
        xa, xb = a[:, j, :].to(device), b[:, j, :].to(device)
        rows = _common_distinct(xa, xb)
        if k >= rows.numel():
            warnings.append(
                f"layer {layer}: too few distinct points: {k + 1} needed, {rows.numel()} common"
            )
            for vals in out:
                vals.append(None)
            continue
        ga = knn_graph(xa[rows], k, device=device)
        gb = knn_graph(xb[rows], k, device=device)
        try:
            results = fn(ga, gb)
        except MetricError as exc:
            warnings.append(f"layer {layer}: {exc.message}")
            results = [None] * n_out
        for vals, v in zip(out, results, strict=True):
            vals.append(v)
    return out, warnings


def _data_overlap(
    spec: DataOverlapComparison, a: Tensor, b: Tensor, layers: list[int], device: torch.device
) -> list[PairCurves]:
    n = a.shape[0]
    ks = [k for k in spec.ks if k < n]
    dropped = [k for k in spec.ks if k >= n]
    curves: list[PairCurves] = []
    if ks:
        values, warnings = _per_layer(
            a,
            b,
            layers,
            device,
            max(ks),
            lambda ga, gb: [data_overlap(ga, gb, k) for k in ks],
            len(ks),
        )
        curves += [
            PairCurves({"k": k}, f"data overlap chi (k={k})", v, warnings=tuple(warnings))
            for k, v in zip(ks, values, strict=True)
        ]
    for k in dropped:
        why = f"data overlap k={k} needs more than {k} queries; there are {n}"
        curves.append(
            PairCurves({"k": k}, f"data overlap chi (k={k})", [None] * len(layers), warnings=(why,))
        )
    return curves


def _partition_ari(
    spec: PartitionAriComparison, a: Tensor, b: Tensor, layers: list[int], device: torch.device
) -> PairCurves:
    need = landscape_needs(spec.density_k, spec.intrinsic_dim, spec.maxk, a.shape[0])

    def ari(ga: KnnGraph, gb: KnnGraph) -> list[float | None]:
        ca, _ = landscape_clusters(
            ga, spec.density_k, spec.intrinsic_dim, spec.Z, spec.halo, spec.maxk
        )
        cb, _ = landscape_clusters(
            gb, spec.density_k, spec.intrinsic_dim, spec.Z, spec.halo, spec.maxk
        )
        return [adjusted_rand(ca.labels, cb.labels)]

    (values,), warnings = _per_layer(a, b, layers, device, need, ari, 1)
    label = f"ARI between the ADP partitions (Z={spec.Z:g}, density k={spec.density_k})"
    return PairCurves({}, label, values, warnings=tuple(warnings))


def _rsa(spec: RsaComparison, a: Tensor, b: Tensor, layers: list[int]) -> PairCurves:
    xs, ys = _layers(a), _layers(b)

    def one(j: int) -> float:
        xa, xb = (standardise(xs[j]), standardise(ys[j])) if spec.standardise else (xs[j], ys[j])
        return compare_rdms(rdm(xa, spec.rdm), rdm(xb, spec.rdm), spec.compare)

    values, warnings = _each_layer(layers, one)
    label = (
        f"RSA: {COMPARE_LABELS[spec.compare]} of the two conditions' RDMs "
        f"({RDM_LABELS[spec.rdm]}{', standardised features' if spec.standardise else ''})"
    )
    params = {"rdm": spec.rdm, "compare": spec.compare}
    return PairCurves(params, label, values, warnings=warnings)
