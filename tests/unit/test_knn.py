"""The kNN engine against brute-force references (scipy cdist, sklearn's exact kd-tree), with
float64 (CPU default) and float32 (GPU default) products, symmetric and plain product blocks."""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
import numpy.typing as npt
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

import reprlab.worker.metrics.knn as knn_module
import reprlab.worker.metrics.knn_exact as knn_exact_module
from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.knn import KnnGraph, knn_graph, remove_duplicates

CPU = torch.device("cpu")
Precision = Literal["float32", "float64"]


def _brute_force(x: npt.NDArray[np.floating], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 neighbours by full cdist; ties broken by the lower index."""
    d = cdist(x.astype(np.float64), x.astype(np.float64))
    np.fill_diagonal(d, -1.0)  # the point itself first, even among duplicates
    idx = np.arange(d.shape[0])
    order = np.stack([np.lexsort((idx, row)) for row in d])[:, : k + 1]
    dist = np.take_along_axis(d, order, axis=1)
    dist[:, 0] = 0.0
    return dist, order


def _assert_matches(graph: KnnGraph, x: npt.NDArray[np.floating], k: int) -> None:
    dist, idx = _brute_force(x, k)
    assert graph.distances.dtype == np.float64 and graph.indices.dtype == np.int64
    assert graph.distances.shape == graph.indices.shape == (x.shape[0], k + 1)
    np.testing.assert_array_equal(graph.indices, idx)
    np.testing.assert_allclose(graph.distances, dist, rtol=1e-13, atol=0)


@pytest.fixture(scope="module")
def cloud() -> npt.NDArray[np.float32]:
    """503 points of a 6-D Gaussian linearly embedded in 40-D, with an offset, float32."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(503, 6)) @ rng.normal(size=(6, 40)) + 3.0
    return x.astype(np.float32)


@pytest.mark.parametrize("chunk_size", [None, 1, 50, 128, 503, 1000])
def test_float32_matches_brute_force_for_any_chunking(
    cloud: npt.NDArray[np.float32], chunk_size: int | None
) -> None:
    graph = knn_graph(torch.from_numpy(cloud), 12, chunk_size=chunk_size, device=CPU)
    _assert_matches(graph, cloud, 12)
    np.testing.assert_array_equal(graph.indices[:, 0], np.arange(cloud.shape[0]))
    assert np.all(graph.distances[:, 0] == 0.0)
    assert graph.n == 503 and graph.k == 12


def test_float64_input_matches_brute_force_and_sklearn() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(300, 3)) @ rng.normal(size=(3, 17))
    graph = knn_graph(torch.from_numpy(x), 20, chunk_size=37)
    _assert_matches(graph, x, 20)
    ref_d, ref_i = NearestNeighbors(n_neighbors=21, algorithm="kd_tree").fit(x).kneighbors(x)
    np.testing.assert_array_equal(graph.indices, ref_i)
    np.testing.assert_allclose(graph.distances, ref_d, rtol=1e-12, atol=1e-14)


def test_k_equal_n_minus_one_takes_every_point(cloud: npt.NDArray[np.float32]) -> None:
    x = cloud[:30]
    _assert_matches(knn_graph(torch.from_numpy(x), 29, chunk_size=8), x, 29)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_is_searched_in_float32(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(200, 16)).astype(np.float32)).to(dtype)
    _assert_matches(knn_graph(x, 5), x.float().numpy(), 5)


def test_exact_where_float32_products_cannot_rank_neighbours() -> None:
    # Two tight clusters 2e4 apart: centred norms ~1e4, so float32 products have errors of
    # ~1e1 in squared distance while neighbours are ~1e-2 apart; rows must fall back.
    rng = np.random.default_rng(3)
    centre = np.zeros(8)
    centre[0] = 1e4
    x = np.concatenate([centre + rng.normal(size=(150, 8)), -centre + rng.normal(size=(150, 8))])
    x = x.astype(np.float32)
    xt = torch.from_numpy(x)
    naive = torch.cdist(xt, xt, compute_mode="use_mm_for_euclid_dist").topk(6, largest=False)
    _, exact = _brute_force(x, 5)
    assert not np.array_equal(np.sort(naive.indices.numpy(), axis=1), np.sort(exact, axis=1))
    _assert_matches(knn_graph(xt, 5, chunk_size=64), x, 5)


def test_exact_ties_are_ordered_by_index() -> None:
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8)), axis=-1).reshape(-1, 2)
    x = np.concatenate([grid, np.zeros((64, 3))], axis=1).astype(np.float32)
    _assert_matches(knn_graph(torch.from_numpy(x), 10, chunk_size=20), x, 10)


def test_duplicates_keep_self_first_at_distance_zero(cloud: npt.NDArray[np.float32]) -> None:
    x = np.concatenate([cloud[:40], cloud[:5]])
    graph = knn_graph(torch.from_numpy(x), 4)
    _assert_matches(graph, x, 4)
    assert graph.indices[40, 1] == 0 and graph.distances[40, 1] == 0.0


def test_remove_duplicates_keeps_first_occurrences_in_order() -> None:
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 2.0], [3.0, 1.0], [-0.0, 0.0], [0.0, 0.0]])
    unique, n_removed = remove_duplicates(x)
    assert n_removed == 3
    torch.testing.assert_close(unique, torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]]))


def test_remove_duplicates_without_duplicates_returns_input(
    cloud: npt.NDArray[np.float32],
) -> None:
    x = torch.from_numpy(cloud)
    unique, n_removed = remove_duplicates(x)
    assert n_removed == 0 and unique is x


def test_graph_is_dadapy_compatible(cloud: npt.NDArray[np.float32]) -> None:
    from dadapy import Data

    graph = knn_graph(torch.from_numpy(cloud), 10)
    data = Data(distances=(graph.distances, graph.indices))
    assert data.N == 503 and data.maxk == 10
    np.testing.assert_array_equal(data.dist_indices, graph.indices)


def test_k_not_below_n_is_a_metric_error() -> None:
    x = torch.zeros(5, 3).normal_(generator=torch.Generator().manual_seed(0))
    with pytest.raises(MetricError, match="need at least 6 distinct points; got 5") as err:
        knn_graph(x, 5)
    assert err.value.hint is not None
    with pytest.raises(MetricError, match="k must be >= 1"):
        knn_graph(x, 0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rows_are_a_metric_error(bad: float) -> None:
    x = torch.ones(10, 4).cumsum(0)
    x[3, 2] = bad
    x[7, 0] = bad
    with pytest.raises(MetricError, match=r"2 of 10 points contain NaN or inf \(first: row 3\)"):
        knn_graph(x, 2)


def test_non_matrix_input_is_a_metric_error() -> None:
    with pytest.raises(MetricError, match="2-D"):
        knn_graph(torch.ones(10), 2)
    with pytest.raises(MetricError, match="2-D"):
        remove_duplicates(torch.ones(2, 3, 4))


# --- both product precisions, their refinement and fallbacks ------------------------------------
# "auto" is float64 products on the CPU (values kept where accurate, the rest refined); float32
# products take float64 values of every candidate from banded products, and fall back where
# they cannot rank a row.


def _clusters(n: int, d: int, seed: int) -> npt.NDArray[np.float32]:
    """n points around 5 centres in d dims, offset from the origin, float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(5, d))
    return (centres[rng.integers(5, size=n)] + rng.normal(size=(n, d)) + 10.0).astype(np.float32)


def _plane(n: int, d: int, seed: int) -> npt.NDArray[np.float32]:
    """n points on a 2-D square embedded in d dims far from the origin (Gram values inexact)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(n, 2)) @ rng.normal(size=(2, d)) + 50.0).astype(np.float32)


@pytest.mark.parametrize("syrk", [True, False], ids=["syrk", "blocked"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("chunk_size", [None, 7, 64])
@pytest.mark.parametrize(
    "points", [_clusters(300, 512, seed=4), _plane(400, 30, seed=5)], ids=["clusters", "plane"]
)
def test_both_product_precisions_match_brute_force(
    points: npt.NDArray[np.float32],
    precision: Precision,
    chunk_size: int | None,
    syrk: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "blocked" is the symmetric product that devices other than the CPU use.
    monkeypatch.setattr(knn_module, "SYRK", syrk)
    x = torch.from_numpy(points)
    graph = knn_graph(x, 15, chunk_size=chunk_size, device=CPU, precision=precision)
    _assert_matches(graph, points, 15)


@pytest.mark.parametrize("syrk", [True, False], ids=["syrk", "blocked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symmetric_product_fills_the_lower_triangle(
    syrk: bool, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knn_module, "SYRK", syrk)
    x = torch.from_numpy(_clusters(130, 24, seed=2)).to(dtype)
    gram = knn_module._lower_gram(x, 17)
    assert gram.shape == (130, 130) and gram.dtype == dtype
    want = -2.0 * (x.double() @ x.double().T)
    lower = torch.ones(130, 130, dtype=torch.bool).tril_()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(gram.double()[lower], want[lower], rtol=tol, atol=tol)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_float32_products_fall_back_where_they_cannot_rank_and_float64_need_not(
    precision: Precision, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in test_exact_where_float32_products_cannot_rank_neighbours: float32 products cannot
    # rank these rows, so those rows are redone with float64 products; float64 products can.
    rng = np.random.default_rng(3)
    centre = np.zeros(8)
    centre[0] = 1e4
    x = np.concatenate([centre + rng.normal(size=(150, 8)), -centre + rng.normal(size=(150, 8))])
    x = x.astype(np.float32)
    redone: list[int] = []
    original = knn_module._row_candidates

    def counting(
        xc: torch.Tensor, sq: torch.Tensor, rows: torch.Tensor, m: int, block: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        redone.append(rows.numel())
        return original(xc, sq, rows, m, block)

    monkeypatch.setattr(knn_module, "_row_candidates", counting)
    graph = knn_graph(torch.from_numpy(x), 5, chunk_size=64, device=CPU, precision=precision)
    _assert_matches(graph, x, 5)
    assert (sum(redone) > 0) == (precision == "float32")


@pytest.mark.parametrize("block", [1, 16, 128])
def test_band_products_give_every_candidate_pair_or_leave_it_to_recompute(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The float32 path's float64 values: each finite one is the Gram form of the pair's
    # squared distance; NaN marks the few candidates outside a block's window.
    monkeypatch.setattr(knn_exact_module, "_BAND_ROWS", block)
    points = _clusters(300, 64, seed=9)
    rng = np.random.default_rng(1)
    cand = torch.from_numpy(np.stack([rng.permutation(300)[:20] for _ in range(300)]))
    values, sq = knn_exact_module.band_sq_distances(torch.from_numpy(points), cand)
    x = points.astype(np.float64)
    want = ((x[:, None, :] - x[cand.numpy()]) ** 2).sum(axis=2)
    finite = np.isfinite(values.numpy())
    assert finite.mean() > 0.95
    # (a self pair, want 0, comes out as a rounding residue of the Gram form)
    np.testing.assert_allclose(values.numpy()[finite], want[finite], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sq.numpy(), ((x - x.mean(axis=0)) ** 2).sum(axis=1), rtol=1e-6)


def test_blocks_against_every_row_when_the_product_triangle_does_not_fit(
    cloud: npt.NDArray[np.float32], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knn_module, "_SYMMETRIC_ELEMENTS", 4096)  # 503**2 does not fit
    monkeypatch.setattr(knn_module, "_BLOCK_ELEMENTS", 4096)  # blocks of 8 rows
    graph = knn_graph(torch.from_numpy(cloud), 12, device=CPU)
    _assert_matches(graph, cloud, 12)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_exact_ties_get_identical_distances(
    cloud: npt.NDArray[np.float32], precision: Precision
) -> None:
    # Rows 40.. copy rows 0..: a point's distances to a row and to its copy tie exactly, and
    # products summed in different blocks would round them apart; near-ties are recomputed.
    x = np.concatenate([cloud[:40], cloud[:40]])
    graph = knn_graph(torch.from_numpy(x), 7, device=CPU, precision=precision)
    _assert_matches(graph, x, 7)
    # Columns 2.. hold each neighbour and its copy side by side (column 1 is the point's copy).
    original = graph.indices[:, 2::2] % 40
    np.testing.assert_array_equal(original, graph.indices[:, 3::2] % 40)
    np.testing.assert_array_equal(graph.distances[:, 2::2], graph.distances[:, 3::2])


def test_unknown_precision_is_a_metric_error(cloud: npt.NDArray[np.float32]) -> None:
    with pytest.raises(MetricError, match="precision must be"):
        knn_graph(torch.from_numpy(cloud), 3, precision=cast(Precision, "bfloat16"))
