"""The metric registry: what a metric receives for one layer and what it returns.

A metric id of the job spec (`MetricSpec.name`) maps to a `MetricImpl` registered with
`@register_metric("id")`. `compute_layer_metrics` (in the package) hands every metric the same
`LayerInput`: the layer's states, the items' labels, the attention masses when extracted, and
one kNN graph of the distinct rows built with the largest k any metric needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from torch import Tensor

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.knn import KnnGraph

LabelValue = str | int | float


@dataclass(frozen=True)
class MetricOutput:
    """One value of one metric at one layer.

    Attributes:
        params: the parameters that identify this curve (e.g. {"n1": 16, "n2": 32}).
        label: the exact estimator name, e.g. "TwoNN ID (discard 10%)".
        value: the value, or None where it is undefined.
        error: its standard error (or spread over folds) where the estimator gives one.
        interval: a (low, high) bootstrap confidence interval when asked.
        why: the reason the value is None, when it is.
    """

    params: dict[str, Any]
    label: str
    value: float | None
    error: float | None = None
    interval: tuple[float, float] | None = None
    why: str | None = None


@dataclass
class LayerInput:
    """Everything a metric may use at one layer.

    Attributes:
        x: [n, d] states, one row per query item, in dataset order (duplicates included).
        labels: label field -> one value per row; a field missing from some item is absent.
        keep: row indices of the distinct rows (first occurrences, ascending): the rows of
            `graph`. Metrics on neighbours use `graph` and `unique_labels`.
        graph: kNN graph of the distinct rows, or None when no metric needs neighbours.
        attention: [n, (heads,) spans] attention masses from the last token at this layer,
            when the extraction measured them; `attention_spans` names the last axis.
    """

    x: Tensor
    labels: Mapping[str, Sequence[LabelValue]]
    keep: npt.NDArray[np.int64]
    graph: KnnGraph | None = None
    attention: npt.NDArray[np.float64] | None = None
    attention_spans: list[str] = field(default_factory=list)

    def label(self, name: str, *, unique: bool = False) -> list[LabelValue]:
        """One label field per row (per distinct row with `unique`)."""
        try:
            values = self.labels[name]
        except KeyError:
            known = ", ".join(sorted(self.labels)) or "none"
            raise MetricError(
                f"no label field {name!r} on every item; fields: {known}",
                hint="name a label field every item carries",
            ) from None
        return [values[i] for i in self.keep] if unique else list(values)

    def categorical_fields(self) -> list[str]:
        """Label fields whose values are not all numbers (candidates for clusters/overlap)."""
        return [name for name, values in self.labels.items() if not is_numeric(values)]

    @property
    def n_distinct(self) -> int:
        """Number of distinct rows (the points of `graph`)."""
        return len(self.keep)

    def neighbours(self) -> KnnGraph:
        """The layer's kNN graph (built because the metric's `max_k` asked for it)."""
        if self.graph is None:
            raise MetricError("this metric needs the kNN graph but none was built")
        return self.graph


def is_numeric(values: Sequence[LabelValue]) -> bool:
    """True when every value is an int or float (not a bool, not a string)."""
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


class MetricImpl(Protocol):
    """What a registered metric provides."""

    def max_k(self, spec: Any, data: LayerInput) -> int:
        """Nearest neighbours the metric needs in the layer's kNN graph (0: none)."""
        ...

    def compute(self, data: LayerInput, spec: Any) -> list[MetricOutput]:
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


def metric_impl(name: str) -> MetricImpl:
    """The registered metric `name`; MetricError naming the known ids otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        known = ", ".join(sorted(METRICS))
        raise MetricError(f"unknown metric {name!r}; known: {known}") from None
