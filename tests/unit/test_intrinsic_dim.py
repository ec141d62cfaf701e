"""TwoNN and Gride against dadapy 0.3.4 on the same data, known manifolds, the AUC and the
metric registry (`compute_layer_metrics`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
import torch
from pydantic import ValidationError
from references import quietly

import reprlab.worker.metrics.graphs as graphs_module
from reprlab.schemas.metrics import GrideMetric, MleMetric, TwoNNMetric
from reprlab.worker.errors import MetricError
from reprlab.worker.metrics import METRICS, LayerInput, compute_layer_metrics
from reprlab.worker.metrics.intrinsic_dim import (
    MleAverage,
    gride,
    gride_scales,
    gride_scaling,
    mle,
    mle_sweep,
    normalised_auc,
    twonn,
)
from reprlab.worker.metrics.knn import KnnGraph, knn_graph

Array = npt.NDArray[np.float32]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def _gaussian(n: int, d: int, big_d: int, seed: int) -> Array:
    """n points of a d-dim standard Gaussian, linearly embedded in big_d dims, with an offset."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, big_d)) + rng.normal(size=big_d)
    return x.astype(np.float32)


def _plane(n: int, big_d: int, seed: int) -> Array:
    """n points uniform on a unit square, linearly embedded in big_d dims."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(n, 2)) @ rng.normal(size=(2, big_d))).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> Array:
    """A 5-D Gaussian in 100-D (1000 points) mixed with a 2-D plane part: a curved ID."""
    return np.concatenate([_gaussian(700, 5, 100, seed=0), _plane(300, 100, seed=1) * 5])


@pytest.fixture(scope="module")
def graph(data: Array) -> KnnGraph:
    return knn_graph(torch.from_numpy(data), 64, chunk_size=300)


@pytest.fixture(scope="module")
def dadapy_data() -> Iterator[Callable[..., Any]]:
    from dadapy import Data

    yield Data


# --- TwoNN == dadapy compute_id_2NN ------------------------------------------------------------


@pytest.mark.parametrize("discard", [0.1, 0.25, 0.0])
def test_twonn_equals_dadapy_from_coordinates_and_from_our_distances(
    data: Array, graph: KnnGraph, dadapy_data: Any, discard: float
) -> None:
    ours = twonn(graph, discard_fraction=discard)
    mu_fraction = 1.0 - discard
    from_x = quietly(lambda: dadapy_data(coordinates=data).compute_id_2NN(mu_fraction=mu_fraction))
    from_graph = quietly(
        lambda: dadapy_data(distances=(graph.distances, graph.indices)).compute_id_2NN(
            mu_fraction=mu_fraction
        )
    )
    for ref_id, _, ref_scale in (from_x, from_graph):
        assert _rel(ours.value, ref_id) < 1e-6
        assert _rel(ours.scale, ref_scale) < 1e-9
    assert ours.error is None  # dadapy reports 0.0: it has no error without decimation
    assert ours.n_used == (int(1000 * mu_fraction) if discard else 1000)


# --- Gride == dadapy return_id_scaling_gride ---------------------------------------------------


def test_gride_scaling_equals_dadapy_from_coordinates_and_from_our_distances(
    data: Array, graph: KnnGraph, dadapy_data: Any
) -> None:
    ours = gride_scaling(graph, range_max=64)
    assert [(s.n1, s.n2) for s in ours] == [(1, 2), (2, 4), (4, 8), (8, 16), (16, 32), (32, 64)]
    from_x = quietly(lambda: dadapy_data(coordinates=data).return_id_scaling_gride(range_max=64))
    from_graph = quietly(
        lambda: dadapy_data(
            distances=(graph.distances, graph.indices), maxk=64
        ).return_id_scaling_gride(range_max=64)
    )
    for ids, errs, scales in (from_x, from_graph):
        assert len(ids) == len(ours)
        for s, ref_id, ref_err, ref_scale in zip(ours, ids, errs, scales, strict=True):
            assert _rel(s.value, ref_id) < 1e-3
            assert _rel(s.error, ref_err) < 1e-3
            assert _rel(s.scale, ref_scale) < 1e-3


def test_single_scale_gride_equals_its_scale_in_the_sweep(graph: KnnGraph) -> None:
    sweep = {(s.n1, s.n2): s for s in gride_scaling(graph, range_max=64)}
    one = gride(graph, 16, 32)
    assert (one.value, one.error, one.scale) == (
        sweep[16, 32].value,
        sweep[16, 32].error,
        sweep[16, 32].scale,
    )


def test_gride_with_n2_not_twice_n1_follows_dadapy_likelihood(graph: KnnGraph) -> None:
    from dadapy._utils import utils as dadapy_utils

    mus = graph.distances[:, 12] / graph.distances[:, 4]
    ref = dadapy_utils._argmax_loglik(np.float64, 1e-3, 1e3, mus.copy(), 4, 12, eps=1e-7)
    ours = gride(graph, 4, 12)
    assert _rel(ours.value, ref) < 1e-12
    # The error uses the real n2 (dadapy's single-scale helper always passes 2*n1).
    fisher = dadapy_utils._fisher_info_scaling(ref, mus, 4, 12, eps=5 * np.finfo(float).eps)
    assert ours.error is not None and _rel(ours.error, fisher**-0.5) < 1e-9


def test_gride_scales() -> None:
    assert gride_scales(2) == [(1, 2)]
    assert gride_scales(48) == [(1, 2), (2, 4), (4, 8), (8, 16), (16, 32)]
    with pytest.raises(MetricError, match="range_max must be >= 2"):
        gride_scales(1)


# --- known dimensions ---------------------------------------------------------------------------
# Both estimators have a standard error of about d / sqrt(N) (2.2% of d at N = 2000). We allow
# 10% of d (> 4 standard errors) and use Gride only up to n2 = 16: at larger scales the
# Gaussian's falling density and the square's edges bias the estimate down, as they should.


@pytest.mark.parametrize(
    ("points", "dim"), [(_plane(2000, 50, seed=2), 2), (_gaussian(2000, 5, 100, seed=3), 5)]
)
def test_known_manifolds(points: Array, dim: int) -> None:
    g = knn_graph(torch.from_numpy(points), 16)
    assert abs(twonn(g).value - dim) < 0.1 * dim
    for s in gride_scaling(g, range_max=16):
        assert abs(s.value - dim) < 0.1 * dim, (s.n1, s.n2, s.value)


# --- errors of the estimators -------------------------------------------------------------------


def test_estimators_refuse_duplicates_and_short_graphs(data: Array) -> None:
    dup = np.concatenate([data[:50], data[:10]])
    g = knn_graph(torch.from_numpy(dup), 8)
    with pytest.raises(MetricError, match="distance 0 .duplicate points."):
        twonn(g)
    with pytest.raises(MetricError, match="needs the 16-th nearest neighbour; the graph has k=8"):
        gride(knn_graph(torch.from_numpy(data[:50]), 8), 8, 16)
    with pytest.raises(MetricError, match="1 <= n1 < n2"):
        gride(g, 4, 4)
    with pytest.raises(MetricError, match="discard_fraction"):
        twonn(g, discard_fraction=1.0)


def test_twonn_with_too_few_kept_points_says_how_many_are_needed(data: Array) -> None:
    g = knn_graph(torch.from_numpy(data[:3]), 2)
    with pytest.raises(MetricError, match="with 3 distinct points that is none") as err:
        twonn(g, discard_fraction=0.8)
    assert err.value.hint == "analyse at least 6 distinct points"


# --- normalised AUC -----------------------------------------------------------------------------


def test_normalised_auc_by_hand() -> None:
    # t = 1/4, 2/4, 3/4, 1: trapezoids 1/4 * (3 + 4 + 3) = 2.5 over a width of 3/4.
    assert normalised_auc([0, 1, 2, 3, 4], [100.0, 2.0, 4.0, 4.0, 2.0]) == pytest.approx(10 / 3)
    # Missing values are bridged; order does not matter; L = max layer (6) even if undefined.
    # points t = 2/6 (5), 4/6 (1): one trapezoid, area 1/3 * 3 over width 1/3 -> 3.
    assert normalised_auc([4, 0, 2, 6], [1.0, 9.0, 5.0, None]) == pytest.approx(3.0)
    assert normalised_auc([0, 1, 2, 3], [1.0, 2.0, math.nan, None]) is None
    assert normalised_auc([0], [1.0]) is None
    assert normalised_auc([], []) is None
    with pytest.raises(MetricError, match="3 layers but 2 values"):
        normalised_auc([0, 1, 2], [1.0, 2.0])


# --- the registry -------------------------------------------------------------------------------


def test_registry_holds_both_id_metrics() -> None:
    assert {"id_twonn", "id_gride"} <= set(METRICS)
    data = LayerInput(x=torch.zeros(3, 2), labels={}, keep=np.arange(3))
    assert METRICS["id_twonn"].max_k(TwoNNMetric(), data) == 2
    gride = METRICS["id_gride"]
    # The largest scale the distinct points allow: 3 points reach n2 = 2, 200 reach 64.
    assert gride.max_k(GrideMetric(range_max=100, report_n2=64), data) == 2
    many = LayerInput(x=torch.zeros(200, 2), labels={}, keep=np.arange(200))
    assert gride.max_k(GrideMetric(range_max=100, report_n2=64), many) == 64


def test_compute_layer_metrics_builds_one_graph_and_matches_the_estimators(
    data: Array, graph: KnnGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []

    def counting_knn_graph(x: torch.Tensor, k: int, **kw: Any) -> KnnGraph:
        built.append(k)
        return knn_graph(x, k, **kw)

    monkeypatch.setattr(graphs_module, "knn_graph", counting_knn_graph)
    x = torch.from_numpy(np.concatenate([data, data[:7]]))
    specs = [TwoNNMetric(discard_fraction=0.1), GrideMetric(range_max=64, report_n2=32)]
    out = compute_layer_metrics(x, specs, device=torch.device("cpu"), chunk_size=256)
    assert built == [64] and out.n_duplicates == 7

    (tw,) = out.outputs["id_twonn"]
    assert tw.params == {"discard_fraction": 0.1} and tw.label == "TwoNN ID (discard 10%)"
    # Another chunking of the same float64 products: equal up to the last bits.
    assert tw.value == pytest.approx(twonn(graph, 0.1).value, rel=1e-12) and tw.error is None

    gr = out.outputs["id_gride"]
    assert [o.params["n2"] for o in gr] == [32, 2, 4, 8, 16, 64]
    assert gr[0].params == {"n1": 16, "n2": 32} and gr[0].label == "Gride ID (n1=16, n2=32)"
    ref = {s.n2: s for s in gride_scaling(graph, 64)}
    for o in gr:
        want = (ref[o.params["n2"]].value, ref[o.params["n2"]].error)
        assert (o.value, o.error) == pytest.approx(want, rel=1e-12)


def test_gride_without_report_scale_keeps_sweep_order_and_labels(data: Array) -> None:
    out = compute_layer_metrics(
        torch.from_numpy(data[:100]),
        [GrideMetric(range_max=16, report_n2=None), TwoNNMetric(discard_fraction=0.0)],
    )
    assert [o.label for o in out.outputs["id_gride"]] == [
        "Gride ID (n1=1, n2=2)",
        "Gride ID (n1=2, n2=4)",
        "Gride ID (n1=4, n2=8)",
        "Gride ID (n1=8, n2=16)",
    ]
    assert out.outputs["id_twonn"][0].label == "TwoNN ID (maximum likelihood, no discard)"
    assert out.n_duplicates == 0


@pytest.mark.parametrize(
    ("report_n2", "message"),
    [(24, "report_n2=24 is not a scale"), (128, "report_n2=128 exceeds range_max")],
)
def test_bad_report_scale_is_refused_by_the_spec_and_by_the_metric(
    data: Array, report_n2: int, message: str
) -> None:
    with pytest.raises(ValidationError, match=f"report_n2={report_n2} is not a scale"):
        GrideMetric(range_max=64, report_n2=report_n2)
    # A spec that skipped validation still gets a clear error from the metric itself.
    unchecked = GrideMetric.model_construct(name="id_gride", range_max=64, report_n2=report_n2)
    with pytest.raises(MetricError, match=message):
        compute_layer_metrics(torch.from_numpy(data[:100]), [unchecked])


def test_too_few_distinct_points_null_the_scales_they_cannot_give_and_say_why(
    data: Array,
) -> None:
    x = torch.from_numpy(np.concatenate([data[:40]] * 3))
    boot = {"n": 100}
    specs = [
        TwoNNMetric(),
        GrideMetric(range_max=64, report_n2=32, bootstrap=boot),
        MleMetric(ks=[50, 15, 25], bootstrap=boot),
    ]
    out = compute_layer_metrics(x, specs)
    assert out.skipped == {} and out.n_duplicates == 80
    g = knn_graph(torch.from_numpy(data[:40]), 32)
    assert out.outputs["id_twonn"][0].value == twonn(g, 0.1).value
    gride_out = out.outputs["id_gride"]
    assert [o.params["n2"] for o in gride_out] == [32, 2, 4, 8, 16, 64]
    assert [o.value for o in gride_out[:5]] == [
        s.value for s in [gride_scaling(g, 32)[-1], *gride_scaling(g, 32)[:-1]]
    ]
    assert gride_out[0].interval is not None
    assert gride_out[-1].value is None and gride_out[-1].why == (
        "too few distinct points: 64 neighbours need 65, this layer has 40"
    )
    mle_out = out.outputs["id_mle"]
    assert [o.params["k"] for o in mle_out] == [50, 15, 25]  # the spec's order: 50 is the main
    assert mle_out[0].value is None and mle_out[0].interval is None
    assert mle_out[0].why is not None and "50 neighbours need 51" in mle_out[0].why
    assert [o.value for o in mle_out[1:]] == [mle(g, k).value for k in (15, 25)]
    assert all(o.interval is not None for o in mle_out[1:])
    # The report scale itself out of reach: the main curve is null, without an interval.
    few = compute_layer_metrics(torch.from_numpy(data[:20]), specs[1:2])
    assert few.outputs["id_gride"][0].params["n2"] == 32
    assert few.outputs["id_gride"][0].value is None and few.outputs["id_gride"][0].interval is None


def test_a_single_distinct_point_skips_every_metric(data: Array) -> None:
    x = torch.from_numpy(np.repeat(data[:1], 30, axis=0))
    out = compute_layer_metrics(x, [TwoNNMetric(), GrideMetric(range_max=8, report_n2=8)])
    assert out.outputs == {} and set(out.skipped) == {"id_twonn", "id_gride"}
    assert "has 1 distinct points" in out.skipped["id_twonn"]


def test_unknown_or_repeated_metric_is_a_metric_error(data: Array) -> None:
    x = torch.from_numpy(data[:20])
    with pytest.raises(MetricError, match="listed once"):
        compute_layer_metrics(x, [TwoNNMetric(), TwoNNMetric()])
    bogus = TwoNNMetric.model_construct(name="id_nope")
    with pytest.raises(MetricError, match="unknown metric 'id_nope'"):
        compute_layer_metrics(x, [bogus])  # type: ignore[list-item]


# --- Levina-Bickel MLE --------------------------------------------------------------------------


def _mle_by_hand(points: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.float64]:
    """Per-point m_k(x_i) = [(1/(k-1)) sum_{j=1}^{k-1} log(T_k/T_j)]^-1, one point at a time."""
    from scipy.spatial.distance import cdist

    dist = cdist(points.astype(np.float64), points.astype(np.float64))
    out = []
    for i in range(points.shape[0]):
        t = np.sort(np.delete(dist[i], i))[:k]  # T_1..T_k
        out.append(1.0 / (sum(math.log(t[k - 1] / t[j]) for j in range(k - 1)) / (k - 1)))
    return np.array(out)


@pytest.mark.parametrize("k", [2, 5, 20])
def test_mle_equals_a_direct_transcription_of_the_formula(k: int) -> None:
    points = _gaussian(80, 3, 7, seed=9)
    m = _mle_by_hand(points, k)
    g = knn_graph(torch.from_numpy(points), 20)
    by_estimates, by_inverses = mle(g, k), mle(g, k, average="inverses")
    assert _rel(by_estimates.value, float(np.mean(m))) < 1e-12
    assert by_estimates.error is not None
    assert _rel(by_estimates.error, float(np.std(m, ddof=1) / math.sqrt(80))) < 1e-12
    inv = 1.0 / m
    assert _rel(by_inverses.value, float(1.0 / np.mean(inv))) < 1e-12
    # delta method: sd(1/mean(inv)) = sd(mean(inv)) / mean(inv)^2
    se = np.std(inv, ddof=1) / math.sqrt(80) / np.mean(inv) ** 2
    assert by_inverses.error is not None and _rel(by_inverses.error, float(se)) < 1e-12
    assert by_estimates.n_used == 80
    assert by_estimates.scale == pytest.approx(float(np.mean(g.distances[:, 1 : k + 1])))


def test_mle_sweep_gives_mle_at_each_k(graph: KnnGraph) -> None:
    averages: tuple[MleAverage, ...] = ("estimates", "inverses")
    for average in averages:
        sweep = mle_sweep(graph, [15, 25, 50], average=average)
        assert [s.k for s in sweep] == [15, 25, 50]
        for s in sweep:
            one = mle(graph, s.k, average=average)
            assert (s.value, s.error, s.scale, s.n_used) == (
                one.value,
                one.error,
                one.scale,
                one.n_used,
            )


# On a Poisson process of dimension d, sum_{j<k} log(T_k/T_j) ~ Gamma(k-1, rate d): the mean of
# the inverses is unbiased and the mean of the estimates is d (k-1)/(k-2). The Gaussian's falling
# density biases both down as d grows (-6% at d = 10, k = 10 here); we allow 10%.
@pytest.mark.parametrize(
    ("points", "dim"),
    [
        (_gaussian(2000, 2, 50, seed=11), 2),
        (_gaussian(2000, 5, 100, seed=12), 5),
        (_gaussian(2000, 10, 100, seed=13), 10),
        (_plane(2000, 50, seed=14), 2),
    ],
)
def test_mle_on_known_manifolds(points: Array, dim: int) -> None:
    g = knn_graph(torch.from_numpy(points), 10)
    k = 10
    assert abs(mle(g, k, average="inverses").value / dim - 1) < 0.1
    assert abs(mle(g, k).value / (dim * (k - 1) / (k - 2)) - 1) < 0.1
    assert mle(g, k).value > mle(g, k, average="inverses").value


def test_mle_refuses_bad_k_duplicates_and_unknown_averages(data: Array) -> None:
    g = knn_graph(torch.from_numpy(data[:200]), 16)
    with pytest.raises(
        MetricError, match="MLE needs the 20-th nearest neighbour; the graph has k=16"
    ):
        mle(g, 20)
    with pytest.raises(MetricError, match="MLE needs k >= 2"):
        mle(g, 1)
    with pytest.raises(MetricError, match="average must be"):
        mle(g, 5, average=cast(MleAverage, "median"))
    dup = knn_graph(torch.from_numpy(np.concatenate([data[:50], data[:3]])), 8)
    with pytest.raises(
        MetricError, match=r"MLE: 6 points have their 1-th neighbour at distance 0"
    ) as e:
        mle_sweep(dup, [5])
    assert e.value.hint is not None and "remove duplicate rows" in e.value.hint
