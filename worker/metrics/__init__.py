"""Per-layer metrics: a registry of metric implementations over one shared kNN graph.

Each metric id of the job spec (`MetricSpec.name`) maps to a `MetricImpl` in `METRICS`
(`base.py`), registered with `@register_metric("id")` in `suite.py`. `compute_layer_metrics`
removes duplicate points, builds the kNN graph of a layer once with the largest k any metric
needs, and runs them all on the same `LayerInput`. A new metric is one `@register_metric` class
in `suite.py` plus its spec in `reprlab.schemas.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from reprlab.schemas.specs import MetricSpec
from reprlab.worker.errors import MetricError
from reprlab.worker.metrics import suite as _suite  # noqa: F401  (registers the metrics)
from reprlab.worker.metrics.base import (
    METRICS,
    LabelValue,
    LayerInput,
    MetricImpl,
    MetricOutput,
    metric_impl,
    register_metric,
)
from reprlab.worker.metrics.graphs import GraphCache, GraphSlot, truncate
from reprlab.worker.metrics.intrinsic_dim import (
    GrideScale,
    IdEstimate,
    gride,
    gride_scaling,
    normalised_auc,
    twonn,
)
from reprlab.worker.metrics.knn import KnnGraph, default_device, knn_graph, unique_rows

__all__ = [
    "METRICS",
    "GraphCache",
    "GraphSlot",
    "GrideScale",
    "IdEstimate",
    "KnnGraph",
    "LayerInput",
    "LayerMetrics",
    "MetricImpl",
    "MetricOutput",
    "compute_layer_metrics",
    "gride",
    "gride_scaling",
    "knn_graph",
    "normalised_auc",
    "register_metric",
    "twonn",
]


@dataclass
class LayerMetrics:
    """Every requested metric on one layer.

    Attributes:
        outputs: metric id -> its outputs (first = main curve), in spec order.
        skipped: metric id -> why it has no value on this layer (e.g. too few distinct
            points: the last-token embeddings of prompts that all end in the same token).
        n_duplicates: duplicate rows removed before the neighbour-based metrics.
    """

    outputs: dict[str, list[MetricOutput]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    n_duplicates: int = 0


def compute_layer_metrics(
    x: Tensor,
    specs: Sequence[MetricSpec],
    *,
    labels: Mapping[str, Sequence[LabelValue]] | None = None,
    attention: npt.NDArray[np.float64] | None = None,
    attention_spans: Sequence[str] = (),
    device: torch.device | None = None,
    chunk_size: int | None = None,
    graph_slot: GraphSlot | None = None,
    duplicates: Literal["remove", "error"] = "remove",
) -> LayerMetrics:
    """Run every metric of `specs` on one layer's representations.

    A metric the layer's data cannot support (fewer distinct points than it needs, or an
    estimator that is undefined on these points) is reported in `skipped` with the reason, and
    the other metrics are still computed: one degenerate layer must not sink a job.

    Args:
        x: [n, d] representations of one layer (one row per item).
        specs: the job's metric specs (each metric id at most once).
        labels: label field -> one value per item (fields every item carries).
        attention: [n, (heads,) spans] attention masses at this layer, if extracted.
        attention_spans: the span names of the last axis of `attention`.
        device: where the kNN graph is computed; default CUDA if available, else CPU.
        chunk_size: query rows per kNN product block (see `knn_graph`).
        graph_slot: keep the layer's graph (of its distinct rows) in this cache slot, with at
            least `graph_slot.min_k` neighbours, for the job's comparisons; a graph already
            held there is reused.
        duplicates: what duplicate rows do when a kNN graph is needed: "remove" them (the
            count is `n_duplicates`), or "error" (raise).

    Raises:
        MetricError: a spec problem: an unknown or repeated metric, invalid parameters, or a
            label field the items do not carry; duplicate rows under duplicates="error".
    """
    impls = [(spec, metric_impl(spec.name)) for spec in specs]
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise MetricError(f"each metric may be listed once; got {names}")
    device = device if device is not None else default_device()
    x = x.to(device)
    keep = unique_rows(x)
    keep_np = np.arange(x.shape[0]) if keep is None else keep.cpu().numpy()
    data = LayerInput(
        x=x,
        labels=dict(labels or {}),
        keep=keep_np.astype(np.int64),
        attention=attention,
        attention_spans=list(attention_spans),
    )
    n = len(keep_np)
    n_dup = int(x.shape[0]) - n
    result = LayerMetrics(n_duplicates=n_dup)
    needs: dict[str, int] = {}
    for spec, impl in impls:
        k = needs[spec.name] = impl.max_k(spec, data)
        if k >= n:
            result.skipped[spec.name] = (
                f"too few distinct points: {spec.name} needs {k + 1}, but this layer has {n} "
                f"distinct points ({n_dup} duplicates of {n + n_dup} rows removed)"
            )
    slot_k = graph_slot.min_k if graph_slot is not None else 0
    if keep is not None and duplicates == "error" and max([slot_k, *needs.values()]) > 0:
        raise MetricError(
            f"{n_dup} of {n + n_dup} rows duplicate another row ({_first_duplicate(x)})",
            hint="set duplicates: remove to drop them before the neighbour-based metrics",
        )
    runnable = [(spec, impl) for spec, impl in impls if spec.name not in result.skipped]
    max_k = max((needs[spec.name] for spec, _ in runnable), default=0)
    graph_k = max(max_k, min(slot_k, n - 1))
    if graph_k > 0:
        slot = graph_slot if graph_slot is not None else GraphSlot(GraphCache(0), "layer")
        graph = slot.cache.graph(
            slot.key, x, graph_k, rows=keep, device=device, chunk_size=chunk_size
        )
        data.graph = truncate(graph, max_k) if max_k else graph
    for spec, impl in runnable:
        try:
            result.outputs[spec.name] = impl.compute(data, spec)
        except MetricError as exc:
            result.skipped[spec.name] = exc.message
    return result


def _first_duplicate(x: Tensor) -> str:
    """'row j equals row i' for the first row j that repeats an earlier row i."""
    _, inverse = torch.unique(x, dim=0, return_inverse=True)
    first: dict[int, int] = {}
    for j, group in enumerate(inverse.tolist()):
        if group in first:
            return f"row {j} equals row {first[group]}"
        first[group] = j
    return "none"
