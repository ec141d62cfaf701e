"""kNN density, ADP clustering, ARI and neighbourhood overlaps against dadapy 0.3.4 (and
sklearn) on the same neighbours, plus small examples worked out by hand."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from references import quietly
from sklearn.metrics import adjusted_rand_score

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.intrinsic_dim import gride
from reprlab.worker.metrics.knn import KnnGraph, knn_graph
from reprlab.worker.metrics.landscape import (
    Density,
    adjusted_rand,
    adp_clustering,
    data_overlap,
    data_overlaps,
    knn_density,
    label_overlap,
    label_overlap_k,
    label_overlaps,
)

Array = npt.NDArray[np.float32]
MAXK = 100

# 1-D points whose neighbour lists are easy to read off (distances in brackets):
#   0: 1 (1), 2 (2.5)      1: 0 (1), 2 (1.5)      2: 1 (1.5), 0 (2.5), 3 (7.5)
#   3: 4 (1.5), 5 (2), 2   4: 5 (0.5), 3 (1.5), 2  5: 4 (0.5), 3 (2), 2
_LINE = torch.tensor([[0.0], [1.0], [2.5], [10.0], [11.5], [12.0]], dtype=torch.float64)
_LINE_LABELS = ["a", "a", "b", "b", "b", "b"]


def _blobs(seed: int = 0) -> tuple[Array, npt.NDArray[np.int64]]:
    """Four touching Gaussian blobs (400/300/200/100 points) in a 4-D subspace of 30 dims."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), [400, 300, 200, 100])
    centers = rng.normal(size=(4, 4)) * 1.5 * np.sqrt(5.0)
    z = centers[labels] + rng.normal(size=(1000, 4))
    return (z @ rng.normal(size=(4, 30)) / 2.0).astype(np.float32), labels


def _dadapy(graph: KnnGraph, maxk: int = MAXK) -> Any:
    from dadapy import Data

    return Data(distances=(graph.distances, graph.indices), maxk=maxk)


@pytest.fixture(scope="module")
def blobs() -> tuple[KnnGraph, npt.NDArray[np.int64]]:
    x, labels = _blobs()
    return knn_graph(torch.from_numpy(x), MAXK), labels


@pytest.fixture(scope="module")
def noise() -> KnnGraph:
    """An unstructured standard Gaussian, 800 points in 20 dims."""
    x = np.random.default_rng(1).normal(size=(800, 20)).astype(np.float32)
    return knn_graph(torch.from_numpy(x), MAXK)


@pytest.fixture(scope="module", params=["blobs", "noise"])
def graph(request: pytest.FixtureRequest) -> KnnGraph:
    if request.param == "blobs":
        return request.getfixturevalue("blobs")[0]
    return request.getfixturevalue("noise")


def _with_our_density(graph: KnnGraph, density: Density, maxk: int = MAXK) -> Any:
    """A dadapy Data on the same graph, holding exactly our log_den / log_den_err / kstar."""
    data = _dadapy(graph, maxk)
    data.set_id(density.intrinsic_dim)
    quietly(lambda: data.compute_density_kNN(density.k))
    data.log_den, data.log_den_err = density.log_den.copy(), density.log_den_err.copy()
    return data


# --- kNN density == dadapy compute_density_kNN ---------------------------------------------------


@pytest.mark.parametrize("k", [1, 16, 100])
def test_knn_density_equals_dadapy(graph: KnnGraph, k: int) -> None:
    dim = gride(graph, 16, 32).value
    ours = knn_density(graph, k, dim)
    data = _dadapy(graph)
    data.set_id(dim)
    log_den, log_den_err = quietly(lambda: data.compute_density_kNN(k))
    np.testing.assert_allclose(ours.log_den, log_den, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ours.log_den_err, log_den_err)
    assert (ours.k, ours.intrinsic_dim) == (k, dim)


def test_knn_density_by_hand() -> None:
    # 1-D points: r_1 = 1, 1, 2; V_1 = 2, so log_den = log(1 / (2 r_1)) - log(3).
    g = knn_graph(torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64), 2)
    d = knn_density(g, 1, 1.0)
    np.testing.assert_allclose(d.log_den, np.log([1 / 2, 1 / 2, 1 / 4]) - np.log(3), atol=1e-15)
    np.testing.assert_array_equal(d.log_den_err, [1.0, 1.0, 1.0])


def test_knn_density_errors(blobs: tuple[KnnGraph, Any]) -> None:
    g = blobs[0]
    with pytest.raises(
        MetricError, match="needs the 101-th nearest neighbour; the graph has k=100"
    ):
        knn_density(g, 101, 5.0)
    with pytest.raises(MetricError, match="positive number"):
        knn_density(g, 16, 0.0)
    dup = knn_graph(torch.tensor([[0.0], [0.0], [1.0], [3.0]]), 2)
    with pytest.raises(MetricError, match="1-th neighbour at distance 0 .duplicate points."):
        knn_density(dup, 1, 1.0)


# --- ADP == dadapy compute_clustering_ADP -------------------------------------------------------


@pytest.mark.parametrize("halo", [False, True])
@pytest.mark.parametrize("Z", [1.0, 1.6, 3.0])
@pytest.mark.parametrize("k", [4, 16])
def test_adp_equals_dadapy(graph: KnnGraph, k: int, Z: float, halo: bool) -> None:
    density = knn_density(graph, k, gride(graph, 16, 32).value)
    ours = adp_clustering(graph, density, Z=Z, halo=halo)
    data = _with_our_density(graph, density)
    ref = quietly(lambda: data.compute_clustering_ADP(Z=Z, halo=halo))
    assert ours.n_clusters == data.N_clusters
    np.testing.assert_array_equal(ours.labels, ref)
    np.testing.assert_array_equal(ours.centers, data.cluster_centers)
    if halo:
        assert ours.core_fraction == np.mean(ref != -1)
    else:
        assert set(ours.labels.tolist()) == set(range(ours.n_clusters))


def test_adp_finds_the_blobs_and_merges_more_with_larger_z(
    blobs: tuple[KnnGraph, npt.NDArray[np.int64]],
) -> None:
    g, truth = blobs
    density = knn_density(g, 16, gride(g, 16, 32).value)
    sweep = [adp_clustering(g, density, Z=z) for z in (1.0, 1.6, 3.0)]
    assert [c.n_clusters for c in sweep] == [4, 3, 3]
    assert adjusted_rand(sweep[0].labels, truth) > 0.9
    assert 0.2 < sweep[0].core_fraction < 0.9  # the halo is informative here
    # The same partition with the halo labelled -1; core_fraction does not depend on it.
    with_halo = adp_clustering(g, density, Z=1.0, halo=True)
    core = with_halo.labels != -1
    assert with_halo.core_fraction == sweep[0].core_fraction == np.mean(core)
    np.testing.assert_array_equal(with_halo.labels[core], sweep[0].labels[core])


def test_adp_with_fewer_neighbours_than_the_graph_equals_dadapy_with_that_maxk(
    blobs: tuple[KnnGraph, Any],
) -> None:
    g = blobs[0]
    density = knn_density(g, 16, gride(g, 16, 32).value)
    ours = adp_clustering(g, density, Z=1.0, halo=True, maxk=16)
    data = _with_our_density(g, density, maxk=16)
    ref = quietly(lambda: data.compute_clustering_ADP(Z=1.0, halo=True))
    np.testing.assert_array_equal(ours.labels, ref)


def test_adp_default_maxk_is_dadapys_default() -> None:
    x = np.random.default_rng(1).normal(size=(800, 20)).astype(np.float32)
    g = knn_graph(torch.from_numpy(x), 120)
    density = knn_density(g, 4, 10.0)
    from dadapy import Data

    data = Data(distances=(g.distances, g.indices))  # keeps 100 neighbours
    data.set_id(10.0)
    quietly(lambda: data.compute_density_kNN(4))
    ref = quietly(lambda: data.compute_clustering_ADP(Z=1.0))
    np.testing.assert_array_equal(adp_clustering(g, density, Z=1.0).labels, ref)
    assert data.maxk == 100


def test_adp_on_a_lattice_breaks_ties_as_dadapy() -> None:
    # Integer grid with a denser half: many exactly equal distances and densities.
    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(np.arange(16), np.arange(16)), -1).reshape(-1, 2).astype(float)
    grid = grid[rng.random(len(grid)) < 0.7]
    grid[grid[:, 0] < 8] *= 0.5
    g = knn_graph(torch.from_numpy(np.unique(grid, axis=0)), 12)
    density = knn_density(g, 4, 2.0)
    for z in (0.5, 1.6):
        ours = adp_clustering(g, density, Z=z, halo=True)
        data = _with_our_density(g, density, maxk=12)
        ref = quietly(partial(data.compute_clustering_ADP, Z=z, halo=True))
        np.testing.assert_array_equal(ours.labels, ref)
        np.testing.assert_array_equal(ours.centers, data.cluster_centers)


def test_adp_by_hand() -> None:
    # r_1 = 1, 1, 1.5, 1.5, 0.5, 0.5. Points 0 and 1 (and 4 and 5) are mutual neighbours of
    # equal density: neither has a strictly denser neighbour, so all four are peaks; 2 joins
    # its neighbour 1 and 3 joins 4. Peaks are never border points, so there is no saddle to
    # merge across and no halo, whatever Z.
    g = knn_graph(_LINE, 2)
    for z in (0.5, 3.0):
        c = adp_clustering(g, knn_density(g, 1, 1.0), Z=z, halo=True)
        assert (c.n_clusters, c.core_fraction) == (4, 1.0)
        np.testing.assert_array_equal(c.labels, [0, 1, 1, 2, 2, 3])
        np.testing.assert_array_equal(c.centers, [0, 1, 4, 5])
        data = _with_our_density(g, knn_density(g, 1, 1.0), maxk=2)
        ref = quietly(partial(data.compute_clustering_ADP, Z=z, halo=True))
        np.testing.assert_array_equal(c.labels, ref)


def test_adp_errors(blobs: tuple[KnnGraph, Any], noise: KnnGraph) -> None:
    g = blobs[0]
    density = knn_density(g, 16, 5.0)
    with pytest.raises(MetricError, match="maxk=8 must be at least the density's k=16"):
        adp_clustering(g, density, maxk=8)
    with pytest.raises(MetricError, match="needs the 200-th nearest neighbour"):
        adp_clustering(g, density, maxk=200)
    with pytest.raises(MetricError, match="density has 1000 values for a graph of 800 points"):
        adp_clustering(noise, density)
    with pytest.raises(MetricError, match="Z must be a positive number"):
        adp_clustering(g, density, Z=0.0)
    # A density that is not a kNN density can leave a dropped peak with no denser neighbour.
    line = knn_graph(torch.tensor([[0.0], [1.0], [2.2]], dtype=torch.float64), 1)
    odd = Density(np.array([0.0, 1.0, 2.0]), np.full(3, 0.1), k=1, intrinsic_dim=1.0)
    with pytest.raises(MetricError, match="removed density peak has no denser point"):
        adp_clustering(line, odd)


# --- adjusted Rand index == sklearn ------------------------------------------------------------


def test_adjusted_rand_equals_sklearn_for_any_labels(
    blobs: tuple[KnnGraph, npt.NDArray[np.int64]],
) -> None:
    g, truth = blobs
    found = adp_clustering(g, knn_density(g, 16, 4.0), Z=1.6).labels
    assert adjusted_rand(found, truth) == adjusted_rand_score(found, truth)
    names = np.array(["anatomy", "law", "math", "virology"])[truth]
    assert adjusted_rand(found, names) == adjusted_rand_score(found, truth)
    mixed = [("a", 1) if t == 0 else t for t in truth.tolist()]  # tuples and ints together
    assert adjusted_rand(mixed, truth) == 1.0
    assert adjusted_rand([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert adjusted_rand([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    with pytest.raises(MetricError, match="got 3 and 2 labels"):
        adjusted_rand([0, 1, 1], [0, 1])


# --- overlaps == dadapy return_label_overlap / return_data_overlap ------------------------------


def test_label_overlap_by_hand() -> None:
    g = knn_graph(_LINE, 3)
    # k=1: first neighbours' labels agree for points 0, 1, 3, 4, 5.
    assert label_overlap(g, _LINE_LABELS, k=1) == pytest.approx(5 / 6)
    # Balanced: class a (0, 1) -> 1, class b (2..5) -> 3/4.
    assert label_overlap(g, _LINE_LABELS, k=1, class_balanced=True) == pytest.approx(7 / 8)
    # class_fraction 0.75: k_a = int(1.5) = 1, k_b = 3; point 2 scores 1/3, the rest 1.
    assert label_overlap(g, _LINE_LABELS, class_fraction=0.75) == pytest.approx(16 / 18)
    assert label_overlap(
        g, _LINE_LABELS, class_fraction=0.75, class_balanced=True
    ) == pytest.approx((1 + (1 / 3 + 3) / 4) / 2)
    # class_fraction 0.25: k_a = int(0.5) = 0 is raised to 1, k_b = 1: the k=1 values.
    assert label_overlap(g, _LINE_LABELS, class_fraction=0.25) == pytest.approx(5 / 6)
    assert label_overlap_k(_LINE_LABELS, 0.75) == 3


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize(("k", "fraction"), [(1, None), (30, None), (None, 0.2), (None, 0.05)])
def test_label_overlap_equals_dadapy(
    blobs: tuple[KnnGraph, npt.NDArray[np.int64]],
    k: int | None,
    fraction: float | None,
    balanced: bool,
) -> None:
    g, truth = blobs
    for labels in (truth, np.arange(g.n) % 7):
        ours = label_overlap(g, labels, k=k, class_fraction=fraction, class_balanced=balanced)
        ref = quietly(
            partial(
                _dadapy(g).return_label_overlap,
                labels,
                k=k,
                class_fraction=fraction,
                weighted=balanced,
            )
        )
        assert ours == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize(("k", "fraction"), [(30, None), (None, 0.05)])
def test_per_point_label_overlaps_equal_dadapy(
    blobs: tuple[KnnGraph, npt.NDArray[np.int64]], k: int | None, fraction: float | None
) -> None:
    g, truth = blobs
    labels = np.array(["abcd"[t] for t in truth])
    overlaps, codes = label_overlaps(g, labels, k=k, class_fraction=fraction)
    ref = quietly(
        partial(_dadapy(g).return_label_overlap, truth, k=k, class_fraction=fraction, avg=False)
    )
    np.testing.assert_allclose(overlaps, ref, rtol=1e-12)
    assert np.array_equal(codes, truth)  # codes in order of first appearance


def test_label_overlap_errors(blobs: tuple[KnnGraph, npt.NDArray[np.int64]]) -> None:
    g, truth = blobs
    with pytest.raises(MetricError, match="exactly one of k and class_fraction"):
        label_overlap(g, truth)
    with pytest.raises(MetricError, match="exactly one of k and class_fraction"):
        label_overlap(g, truth, k=3, class_fraction=0.3)
    with pytest.raises(MetricError, match="needs the 101-th nearest neighbour"):
        label_overlap(g, truth, k=101)
    # The largest class (400 points) needs 120 neighbours at class_fraction 0.3.
    assert label_overlap_k(truth, 0.3) == 120
    with pytest.raises(MetricError, match="needs the 120-th nearest neighbour"):
        label_overlap(g, truth, class_fraction=0.3)
    with pytest.raises(MetricError, match=r"class_fraction must be in \(0, 1\]"):
        label_overlap(g, truth, class_fraction=1.5)
    with pytest.raises(MetricError, match="one label per point: 1000, got 999"):
        label_overlap(g, truth[:-1], k=3)


def test_data_overlap_by_hand() -> None:
    a = knn_graph(_LINE, 2)
    # Point 2 moved far right: its neighbours become 5, 4; points 0 and 1 now see 3 second.
    b = knn_graph(torch.tensor([[0.0], [1.0], [30.0], [10.0], [11.5], [12.0]]), 2)
    assert data_overlap(a, b, 1) == pytest.approx(5 / 6)
    assert data_overlap(a, b, 2) == pytest.approx((1 / 2 + 1 / 2 + 0 + 1 + 1 + 1) / 6)
    assert data_overlap(a, a, 2) == 1.0


@pytest.mark.parametrize("k", [1, 30, 100])
def test_data_overlap_equals_dadapy(blobs: tuple[KnnGraph, Any], k: int) -> None:
    x, _ = _blobs()
    rng = np.random.default_rng(7)
    y = x @ rng.normal(size=(30, 40)).astype(np.float32) + rng.normal(size=(1000, 40)) * 0.5
    a, b = blobs[0], knn_graph(torch.from_numpy(y.astype(np.float32)), MAXK)
    ours = data_overlap(a, b, k)
    ref = quietly(lambda: _dadapy(a).return_data_overlap(dist_indices=b.indices, k=k))
    assert ours == pytest.approx(ref, rel=1e-12)
    assert 0.0 < ours < 1.0


def test_per_point_data_overlaps_equal_dadapy(blobs: tuple[KnnGraph, Any]) -> None:
    x, _ = _blobs()
    y = x + np.random.default_rng(8).normal(size=x.shape).astype(np.float32)
    a, b = blobs[0], knn_graph(torch.from_numpy(y), MAXK)
    ours = data_overlaps(a, b, 30)
    ref = quietly(lambda: _dadapy(a).return_data_overlap(dist_indices=b.indices, k=30, avg=False))
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert ours.shape == (1000,) and 0.0 < ours.mean() < 1.0


def test_data_overlap_errors(blobs: tuple[KnnGraph, Any], noise: KnnGraph) -> None:
    with pytest.raises(MetricError, match="got 1000 and 800 points"):
        data_overlap(blobs[0], noise, 10)
    small = knn_graph(torch.from_numpy(_blobs()[0]), 10)
    with pytest.raises(MetricError, match="needs the 11-th nearest neighbour; the graph has k=10"):
        data_overlap(blobs[0], small, 11)
