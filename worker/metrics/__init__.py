"""Per-layer metrics: a registry of metric implementations over one shared kNN graph.

Each metric id of the job spec (`MetricSpec.name`) maps to a `MetricImpl` in `METRICS`,
registered with `@register_metric("id")`. `compute_layer_metrics` removes duplicate points,
builds the kNN graph of a layer once with the largest k any metric needs, and runs them all.
A new metric is one `@register_metric` class (here, or in its module imported below) plus its
spec in `reprlab.schemas.specs`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor

from reprlab.schemas.specs import GrideMetric, MetricSpec, TwoNNMetric
from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.intrinsic_dim import (
    GrideScale,
    IdEstimate,
    gride,
    gride_scales,
    gride_scaling,
    normalised_auc,
    twonn,
)
from reprlab.worker.metrics.knn import KnnGraph, default_device, knn_graph, remove_duplicates

__all__ = [
    "METRICS",
    "GrideScale",
    "IdEstimate",
    "KnnGraph",
    "LayerMetrics",
    "MetricImpl",
    "MetricOutput",
    "compute_layer_metrics",
    "gride",
    "gride_scaling",
    "knn_graph",
    "normalised_auc",
    "register_metric",
    "remove_duplicates",
    "twonn",
]


@dataclass(frozen=True)
class MetricOutput:
    """One value of one metric at one layer.

    Attributes:
        params: the estimator parameters that identify this curve (e.g. {"n1": 16, "n2": 32}).
        label: the exact estimator name, e.g. "TwoNN ID (discard 10%)".
        value: the value, or None where it is undefined.
        error: its standard error where the estimator gives one.
    """

    params: dict[str, Any]
    label: str
    value: float | None
    error: float | None = None


class MetricImpl(Protocol):
    """What a registered metric provides."""

    def max_k(self, spec: Any) -> int:
        """Nearest neighbours the metric needs in the layer's kNN graph."""
        ...

    def compute(self, graph: KnnGraph, spec: Any) -> list[MetricOutput]:
        """The metric's outputs on one layer; the first is its main curve."""
        ...


METRICS: dict[str, MetricImpl] = {}

_Impl = TypeVar("_Impl", bound=type)


def register_metric(name: str) -> Callable[[_Impl], _Impl]:
    """Class decorator: register an instance of the class as the metric `name`."""

    def decorate(cls: _Impl) -> _Impl:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        METRICS[name] = cls()
        return cls

    return decorate


@dataclass
class LayerMetrics:
    """Every requested metric on one layer.

    Attributes:
        outputs: metric id -> its outputs (first = main curve), in spec order.
        skipped: metric id -> why it has no value on this layer (e.g. too few distinct
            points: the last-token embeddings of prompts that all end in the same token).
        n_duplicates: duplicate rows removed before the metrics.
    """

    outputs: dict[str, list[MetricOutput]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    n_duplicates: int = 0


def compute_layer_metrics(
    x: Tensor,
    specs: Sequence[MetricSpec],
    *,
    device: torch.device | None = None,
    chunk_size: int | None = None,
) -> LayerMetrics:
    """Run every metric of `specs` on one layer's representations.

    A metric the layer's data cannot support (fewer distinct points than it needs, or an
    estimator that is undefined on these points) is reported in `skipped` with the reason, and
    the other metrics are still computed: one degenerate layer must not sink a job.

    Args:
        x: [n, d] representations of one layer (one row per item).
        specs: the job's metric specs (each metric id at most once).
        device: where the kNN graph is computed; default CUDA if available, else CPU.
        chunk_size: query rows per kNN product block (see `knn_graph`).

    Raises:
        MetricError: a spec problem: an unknown or repeated metric, or invalid parameters.
    """
    impls = [(spec, _impl(spec.name)) for spec in specs]
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise MetricError(f"each metric may be listed once; got {names}")
    needs = {spec.name: impl.max_k(spec) for spec, impl in impls}
    device = device if device is not None else default_device()
    x_unique, n_dup = remove_duplicates(x.to(device))
    n = int(x_unique.shape[0])
    result = LayerMetrics(n_duplicates=n_dup)
    for name, k in needs.items():
        if k >= n:
            result.skipped[name] = (
                f"too few distinct points: {name} needs {k + 1}, but this layer has {n} "
                f"distinct points ({n_dup} duplicates of {n + n_dup} rows removed)"
            )
    runnable = [(spec, impl) for spec, impl in impls if spec.name not in result.skipped]
    if not runnable:
        return result
    graph = knn_graph(
        x_unique,
        max(needs[spec.name] for spec, _ in runnable),
        device=device,
        chunk_size=chunk_size,
    )
    for spec, impl in runnable:
        try:
            result.outputs[spec.name] = impl.compute(graph, spec)
        except MetricError as exc:
            result.skipped[spec.name] = exc.message
    return result


def _impl(name: str) -> MetricImpl:
    try:
        return METRICS[name]
    except KeyError:
        known = ", ".join(sorted(METRICS))
        raise MetricError(f"unknown metric {name!r}; known: {known}") from None


def _percent(fraction: float) -> str:
    return f"{round(fraction * 100, 6):g}%"


@register_metric("id_twonn")
class TwoNNImpl:
    """TwoNN intrinsic dimension (`twonn`), one output."""

    def max_k(self, spec: TwoNNMetric) -> int:
        return 2

    def compute(self, graph: KnnGraph, spec: TwoNNMetric) -> list[MetricOutput]:
        est = twonn(graph, spec.discard_fraction)
        if spec.discard_fraction == 0.0:
            label = "TwoNN ID (maximum likelihood, no discard)"
        else:
            label = f"TwoNN ID (discard {_percent(spec.discard_fraction)})"
        params = {"discard_fraction": spec.discard_fraction}
        return [MetricOutput(params=params, label=label, value=est.value, error=est.error)]


@register_metric("id_gride")
class GrideImpl:
    """Gride intrinsic dimension over a scale sweep; the `report_n2` scale comes first."""

    def max_k(self, spec: GrideMetric) -> int:
        return self._scales(spec)[-1][1]

    def compute(self, graph: KnnGraph, spec: GrideMetric) -> list[MetricOutput]:
        self._scales(spec)
        outputs = [
            MetricOutput(
                params={"n1": s.n1, "n2": s.n2},
                label=f"Gride ID (n1={s.n1}, n2={s.n2})",
                value=s.value,
                error=s.error,
            )
            for s in gride_scaling(graph, spec.range_max)
        ]
        if spec.report_n2 is not None:
            main = next(i for i, o in enumerate(outputs) if o.params["n2"] == spec.report_n2)
            outputs.insert(0, outputs.pop(main))
        return outputs

    @staticmethod
    def _scales(spec: GrideMetric) -> list[tuple[int, int]]:
        scales = gride_scales(spec.range_max)
        n2s = [n2 for _, n2 in scales]
        if spec.report_n2 is not None and spec.report_n2 not in n2s:
            why = "exceeds range_max" if spec.report_n2 > spec.range_max else "is not a scale"
            raise MetricError(
                f"Gride report_n2={spec.report_n2} {why}: the sweep with "
                f"range_max={spec.range_max} has n2 = {', '.join(map(str, n2s))}",
                hint="set report_n2 to a power of two between 2 and range_max",
            )
        return scales
