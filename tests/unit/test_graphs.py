"""The job's kNN graph cache: reuse is exact, bounded by its budget, and keyed by the rows used;
and the per-layer metrics' duplicate policy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch

from reprlab.schemas.metrics import LabelOverlapMetric, TwoNNMetric
from reprlab.worker.errors import MetricError
from reprlab.worker.metrics import GraphCache, GraphSlot, compute_layer_metrics
from reprlab.worker.metrics.graphs import truncate
from reprlab.worker.metrics.knn import knn_graph

CPU = torch.device("cpu")


def _ties(n: int = 120) -> npt.NDArray[np.float64]:
    """Points on an integer grid: many exactly tied distances, where a truncation could err."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 6, size=(n, 3)).astype(np.float64)


def _cloud(n: int = 150, d: int = 10, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(size=(n, d)))


def test_a_truncated_graph_is_the_smaller_graph_exactly_ties_included() -> None:
    x = torch.from_numpy(np.unique(_ties(), axis=0))
    big = knn_graph(x, 40, device=CPU)
    for k in (1, 7, 25, 40):
        small = knn_graph(x, k, device=CPU)
        cut = truncate(big, k)
        np.testing.assert_array_equal(cut.indices, small.indices)
        np.testing.assert_array_equal(cut.distances, small.distances)
        assert cut.distances.flags.c_contiguous and cut.indices.flags.c_contiguous
    with pytest.raises(ValueError, match="cannot take 41"):
        truncate(big, 41)


def test_the_cache_computes_a_graph_once_and_recomputes_for_more_neighbours_or_other_rows() -> None:
    cache = GraphCache()
    x = _cloud()
    first = cache.graph(("a", 3), x, 20)
    assert (cache.hits, cache.misses) == (0, 1)
    again = cache.graph(("a", 3), x, 12)
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(again.indices, first.indices[:, :13])
    cache.graph(("a", 3), x, 30)  # more neighbours than held: computed, replaces the entry
    assert cache.misses == 2
    cache.graph(("a", 3), x, 25)
    assert cache.hits == 2
    rows = torch.arange(0, 150, 2)
    sub = cache.graph(("a", 3), x, 10, rows=rows)  # other rows: computed on those rows
    assert cache.misses == 3 and sub.n == 75
    np.testing.assert_array_equal(sub.indices, knn_graph(x[rows], 10, device=CPU).indices)
    cache.graph(("a", 3), x, 10, rows=rows.clone())  # the same rows, another tensor: held
    assert cache.hits == 3
    cache.graph(("b", 3), x, 10)
    assert cache.misses == 4


def test_the_budget_drops_the_least_recently_used_graphs_first() -> None:
    x = _cloud()
    one = 150 * 11 * 16  # float64 distances and int64 indices of a k=10 graph
    cache = GraphCache(budget_bytes=2 * one)
    for key in ("a", "b"):
        cache.graph(key, x, 10)
    cache.graph("a", x, 10)  # "a" is now the most recently used
    cache.graph("c", x, 10)  # over budget: "b" goes
    assert cache.held_bytes == 2 * one
    misses = cache.misses
    cache.graph("a", x, 10)
    cache.graph("c", x, 10)
    assert cache.misses == misses
    cache.graph("b", x, 10)
    assert cache.misses == misses + 1
    none = GraphCache(budget_bytes=0)
    none.graph("a", x, 10)
    none.graph("a", x, 10)
    assert (none.hits, none.misses, none.held_bytes) == (0, 2, 0)


def test_a_graph_slot_keeps_more_neighbours_for_later_and_changes_no_metric_value() -> None:
    x = _cloud(200, 8, seed=1)
    labels = {"half": ["a" if i < 100 else "b" for i in range(200)]}
    specs = [TwoNNMetric(), LabelOverlapMetric(labels=["half"], k=15)]
    plain = compute_layer_metrics(x, specs, labels=labels, device=CPU)
    cache = GraphCache()
    slot = GraphSlot(cache, ("cond", 0), min_k=60)
    shared = compute_layer_metrics(x, specs, labels=labels, device=CPU, graph_slot=slot)
    for name in ("id_twonn", "label_overlap"):
        assert [o.value for o in shared.outputs[name]] == [o.value for o in plain.outputs[name]]
    held = cache.graph(("cond", 0), x, 60)
    assert cache.hits == 1 and held.k == 60
    np.testing.assert_array_equal(held.indices, knn_graph(x, 60, device=CPU).indices)
    # More than the layer's points can give: the slot asks for what there is.
    slot = GraphSlot(GraphCache(), ("cond", 0), min_k=10_000)
    compute_layer_metrics(x, specs, labels=labels, device=CPU, graph_slot=slot)
    assert slot.cache.graph(("cond", 0), x, 199).k == 199 and slot.cache.hits == 1


def test_duplicates_are_removed_by_default_and_fail_the_layer_when_the_spec_says_error() -> None:
    x = _cloud(60, 5)
    x[17] = x[4]
    x[40] = x[4]
    removed = compute_layer_metrics(x, [TwoNNMetric()], device=CPU)
    assert removed.n_duplicates == 2 and removed.outputs["id_twonn"][0].value is not None
    with pytest.raises(MetricError, match=r"2 of 60 rows duplicate another row \(row 17 equals "):
        compute_layer_metrics(x, [TwoNNMetric()], device=CPU, duplicates="error")
    # Nothing needs a graph: duplicates do not matter, even under "error".
    assert compute_layer_metrics(x, [], device=CPU, duplicates="error").outputs == {}
    # A comparison's slot needs one: duplicates do matter.
    slot = GraphSlot(GraphCache(), "c", min_k=5)
    with pytest.raises(MetricError, match="row 17 equals row 4"):
        compute_layer_metrics(x, [], device=CPU, duplicates="error", graph_slot=slot)
