"""RSA against rsatoolbox 0.3.2 on the same data: every RDM method, every comparison method
(with the ties that hypothesis RDMs always have), tau-a against a brute-force count, and the
hypothesis RDMs, user RDMs and token pooling by hand."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr
from sklearn.preprocessing import StandardScaler

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.rsa import (
    COMPARE_LABELS,
    RDM_LABELS,
    CompareMethod,
    RdmMethod,
    categorical_rdm,
    compare_rdms,
    numeric_rdm,
    pool_tokens,
    rdm,
    standardise,
    user_rdm,
)

FloatArray = npt.NDArray[np.float64]
N = 60
# Our comparison names -> rsatoolbox `compare` method names.
RSATOOLBOX_COMPARE = {"spearman": "spearman", "kendall_tau_a": "tau-a", "pearson": "corr"}
RDM_METHODS: tuple[RdmMethod, ...] = ("cosine", "correlation", "euclidean")
COMPARE_METHODS: tuple[CompareMethod, ...] = ("spearman", "kendall_tau_a", "pearson")


def _rsatoolbox_rdm(x: FloatArray, method: str) -> FloatArray:
    """rsatoolbox's condensed RDM; its calc_rdm has no cosine, so cosine goes through
    "correlation" on [x, -x], whose rows have mean 0, making the two distances equal."""
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import RDMs, calc_rdm

    if method == "cosine":
        x, method = np.hstack([x, -x]), "correlation"
    rdms = calc_rdm(Dataset(x), method=method)
    assert isinstance(rdms, RDMs)
    return np.asarray(rdms.dissimilarities[0])


def _rsatoolbox_compare(a: FloatArray, b: FloatArray, method: str) -> float:
    from rsatoolbox.rdm import RDMs, compare

    rdms_a, rdms_b = RDMs(dissimilarities=a[None]), RDMs(dissimilarities=b[None])
    return float(compare(rdms_a, rdms_b, method=RSATOOLBOX_COMPARE[method])[0, 0])


def _brute_tau_a(a: FloatArray, b: FloatArray) -> float:
    """(concordant - discordant) / (m(m-1)/2) by comparing every pair: O(m^2)."""
    sa = np.sign(a[:, None] - a[None, :])
    sb = np.sign(b[:, None] - b[None, :])
    m = a.shape[0]
    return float(np.sum(sa * sb) / (m * (m - 1)))  # each pair counted twice


@pytest.fixture(scope="module")
def x() -> FloatArray:
    """N items with 3-group structure, a large common offset, in 40 features."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 40)) * 2
    return centres[np.arange(N) % 3] + rng.normal(size=(N, 40)) + 50.0


@pytest.fixture(scope="module")
def hypotheses() -> dict[str, FloatArray]:
    """Hypothesis RDMs, all with ties: a category, a coarse numeric value, and a tied model."""
    rng = np.random.default_rng(1)
    rounded = np.round(rng.normal(size=(N, 3)), 0)  # many duplicate rows -> tied distances
    return {
        "category": categorical_rdm([("a", "b", "c")[i % 3] for i in range(N)]),
        "numeric": numeric_rdm(np.round(rng.uniform(0, 4, size=N))),
        "tied_model": rdm(rounded + 0.0, "euclidean"),
    }


# --- RDMs == rsatoolbox calc_rdm ------------------------------------------------------------------


@pytest.mark.parametrize("method", RDM_METHODS)
def test_rdm_equals_rsatoolbox(x: FloatArray, method: RdmMethod) -> None:
    ours = rdm(x, method)
    ref = _rsatoolbox_rdm(x, method)
    assert ours.shape == (N * (N - 1) // 2,) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_rdm_definitions_by_scipy(x: FloatArray) -> None:
    d = x.shape[1]
    np.testing.assert_allclose(rdm(x, "cosine"), pdist(x, "cosine"), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        rdm(x, "correlation"), pdist(x, "correlation"), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(rdm(x, "euclidean"), pdist(x, "sqeuclidean") / d, rtol=1e-9)
    assert RDM_LABELS["euclidean"].startswith("squared Euclidean / d")


def test_rdm_of_float32_input_and_squareform_order(x: FloatArray) -> None:
    x32 = x.astype(np.float32)
    ours = rdm(x32, "euclidean")
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, pdist(x32.astype(np.float64), "sqeuclidean") / 40, rtol=1e-9)
    square = squareform(rdm(x, "cosine"))
    i, j = 3, 17
    expected = 1 - x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j])
    assert square[i, j] == pytest.approx(expected, rel=1e-9)


def test_near_identical_items_give_small_nonnegative_distances() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=64) * 1e3
    x = base + rng.normal(size=(5, 64)) * 1e-3
    for method in RDM_METHODS:
        assert np.all(rdm(x, method) >= 0.0)
    np.testing.assert_allclose(rdm(x, "euclidean"), pdist(x, "sqeuclidean") / 64, rtol=1e-6)


@pytest.mark.parametrize(
    ("x_bad", "method", "message"),
    [
        (np.vstack([np.ones(4), np.zeros(4), np.arange(4.0)]), "cosine", "1 items are all zeros"),
        (np.vstack([np.full(7, 0.1), np.arange(7.0)]), "correlation", "constant across"),
        (np.ones(5), "euclidean", r"must be an \[n, d\] array"),
        (np.ones((1, 5)), "euclidean", "at least 2 items"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "euclidean", "non-finite"),
        (np.eye(3), "manhattan", "unknown RDM method 'manhattan'"),
    ],
)
def test_rdm_errors(x_bad: FloatArray, method: Any, message: str) -> None:
    with pytest.raises(MetricError, match=message):
        rdm(x_bad, method)


# --- comparisons == rsatoolbox compare ------------------------------------------------------------


@pytest.mark.parametrize("compare_method", COMPARE_METHODS)
@pytest.mark.parametrize("rdm_method", RDM_METHODS)
def test_model_vs_hypotheses_equals_rsatoolbox(
    x: FloatArray,
    hypotheses: dict[str, FloatArray],
    rdm_method: RdmMethod,
    compare_method: CompareMethod,
) -> None:
    model = rdm(x, rdm_method)
    for hyp in hypotheses.values():
        ours = compare_rdms(model, hyp, compare_method)
        assert ours == pytest.approx(_rsatoolbox_compare(model, hyp, compare_method), abs=1e-12)
    # The model's own categorical structure is found.
    assert compare_rdms(model, hypotheses["category"], compare_method) > 0.3


@pytest.mark.parametrize("compare_method", COMPARE_METHODS)
def test_hypothesis_vs_hypothesis_with_ties_on_both_sides_equals_rsatoolbox(
    hypotheses: dict[str, FloatArray], compare_method: CompareMethod
) -> None:
    for a, b in combinations(hypotheses.values(), 2):
        ours = compare_rdms(a, b, compare_method)
        assert ours == pytest.approx(_rsatoolbox_compare(a, b, compare_method), abs=1e-12)
        assert ours == pytest.approx(compare_rdms(b, a, compare_method), abs=1e-15)


def test_spearman_is_scipy_spearmanr(x: FloatArray, hypotheses: dict[str, FloatArray]) -> None:
    model = rdm(x, "cosine")
    ref = spearmanr(model, hypotheses["numeric"]).statistic
    assert compare_rdms(model, hypotheses["numeric"], "spearman") == pytest.approx(ref, abs=1e-12)


def test_tau_a_equals_a_brute_force_count_with_ties() -> None:
    rng = np.random.default_rng(3)
    for trial, m in enumerate([45, 105, 190, 300]):  # condensed RDMs of 10, 15, 20, 25 items
        a = np.round(rng.normal(size=m), 1)  # ties in a
        b = np.round(a + rng.normal(size=m), 0) if trial % 2 else rng.integers(0, 3, m) * 1.0
        ours = compare_rdms(a, b, "kendall_tau_a")
        assert ours == pytest.approx(_brute_tau_a(a, b), abs=1e-12)
        assert ours == pytest.approx(_rsatoolbox_compare(a, b, "kendall_tau_a"), abs=1e-12)


def test_tau_a_of_identical_tied_rdms_is_below_one(hypotheses: dict[str, FloatArray]) -> None:
    cat = hypotheses["category"]
    p = cat.shape[0] * (cat.shape[0] - 1) / 2
    ones = np.sum(cat == 1.0)
    zeros = cat.shape[0] - ones
    # Only pairs of entries across the two values are concordant; tied pairs count 0.
    assert compare_rdms(cat, cat, "kendall_tau_a") == pytest.approx(ones * zeros / p, abs=1e-12)
    assert compare_rdms(cat, cat, "spearman") == pytest.approx(1.0)


def test_large_rdms_equal_rsatoolbox(hypotheses: dict[str, FloatArray]) -> None:
    """n = 600 items (179,700 entries): the O(m log m) path at a realistic size."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, size=600)
    x = rng.normal(size=(600, 32)) + np.eye(4, 32)[labels] * 1.5
    model, hyp = rdm(x, "correlation"), categorical_rdm(labels.tolist())
    for method in COMPARE_METHODS:
        ours = compare_rdms(model, hyp, method)
        assert ours == pytest.approx(_rsatoolbox_compare(model, hyp, method), abs=1e-10)


def test_rank_comparisons_ignore_monotone_transforms(x: FloatArray) -> None:
    a, b = rdm(x, "euclidean"), rdm(x[:, ::-1] ** 2, "cosine")
    rank_methods: tuple[CompareMethod, ...] = ("spearman", "kendall_tau_a")
    for method in rank_methods:
        ref = compare_rdms(a, b, method)
        assert compare_rdms(np.sqrt(a), np.exp(b), method) == pytest.approx(ref, abs=1e-12)
    assert set(COMPARE_LABELS) == {"spearman", "kendall_tau_a", "pearson"}


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.ones(3), np.arange(3.0), "RDM a is constant"),
        (np.arange(3.0), np.arange(6.0), "3 and 6 entries"),
        (np.arange(4.0), np.arange(4.0), "4 entries: not n"),
        (np.arange(1.0), np.arange(1.0), "not n\\(n-1\\)/2 for n >= 3"),
        (np.eye(3), np.eye(3), "must be a condensed vector"),
        (np.array([0.0, 1.0, np.inf]), np.arange(3.0), "non-finite"),
    ],
)
def test_compare_errors(a: FloatArray, b: FloatArray, message: str) -> None:
    with pytest.raises(MetricError, match=message):
        compare_rdms(a, b, "spearman")


def test_unknown_comparison() -> None:
    unknown: Any = "cosine"
    with pytest.raises(MetricError, match="unknown RDM comparison 'cosine'"):
        compare_rdms(np.arange(3.0), np.arange(3.0), unknown)


# --- hypothesis and user RDMs ---------------------------------------------------------------------


def test_categorical_and_numeric_rdms_by_hand() -> None:
    labels = ["x", 2, "x", 2.0, None]
    unhashable: Any = [[1], [2]]
    words: Any = ["a", "b"]
    expected = [float(a != b) for a, b in combinations(labels, 2)]
    assert categorical_rdm(labels).tolist() == expected
    values = [0.5, -1.0, 3.0, 0.5]
    assert numeric_rdm(values).tolist() == [abs(a - b) for a, b in combinations(values, 2)]
    with pytest.raises(MetricError, match="hashable"):
        categorical_rdm(unhashable)
    with pytest.raises(MetricError, match="at least 2 items"):
        categorical_rdm(["a"])
    with pytest.raises(MetricError, match="finite numbers"):
        numeric_rdm([1.0, np.nan])
    with pytest.raises(MetricError, match="must be numbers"):
        numeric_rdm(words)


def test_user_rdm_accepts_a_matrix_or_a_condensed_vector() -> None:
    condensed = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    matrix = squareform(condensed)
    np.testing.assert_array_equal(user_rdm(matrix, 4), condensed)
    np.testing.assert_array_equal(user_rdm(condensed.tolist(), 4), condensed)
    asym = matrix.copy()
    asym[0, 1] += 0.5
    diag = matrix + np.eye(4)
    cases = [
        (asym, 4, "symmetric"),
        (diag, 4, "diagonal must be zero"),
        (matrix, 5, r"must be \[5, 5\]"),
        (condensed, 5, "of 5 items has 10 entries, got 6"),
        (np.where(matrix == 6.0, np.nan, matrix), 4, "non-finite"),
    ]
    for bad, n, message in cases:
        with pytest.raises(MetricError, match=message):
            user_rdm(bad, n)


# --- token pooling --------------------------------------------------------------------------------


def test_pool_tokens_max_pools_relevant_tokens_and_standardises() -> None:
    rng = np.random.default_rng(5)
    states = rng.normal(size=(30, 7, 5)).astype(np.float32)
    states[:, :, 4] = 2.0  # a constant feature
    mask = rng.uniform(size=(30, 7)) < 0.4
    mask[:, 0] = True
    pooled = np.stack([states[i][mask[i]].max(axis=0) for i in range(30)]).astype(np.float64)
    ours = pool_tokens(states, mask)
    assert ours.shape == (30, 5) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, StandardScaler().fit_transform(pooled), atol=1e-12)
    np.testing.assert_allclose(ours[:, :4].std(axis=0), 1.0)  # ddof=0
    assert np.all(ours[:, 4] == 0.0)


def test_standardise_equals_standard_scaler_with_constant_features_zeroed() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(25, 6)).astype(np.float32) * 40 + 3
    x[:, 2] = 0.1  # constant: centring alone would leave rounding noise
    ours = standardise(x)
    np.testing.assert_allclose(ours, StandardScaler().fit_transform(x.astype(np.float64)))
    assert ours.dtype == np.float64 and np.all(ours[:, 2] == 0.0)
    with pytest.raises(MetricError, match="at least 2 items"):
        standardise(x[:1])


def test_pool_tokens_feeds_an_rsa_that_matches_rsatoolbox() -> None:
    rng = np.random.default_rng(6)
    labels = np.arange(24) % 2
    states = rng.normal(size=(24, 6, 16)) + labels[:, None, None] * np.eye(16)[0] * 3
    mask = np.zeros((24, 6), dtype=bool)
    mask[:, 2:4] = True
    model, hyp = rdm(pool_tokens(states, mask), "cosine"), categorical_rdm(labels.tolist())
    np.testing.assert_allclose(model, _rsatoolbox_rdm(pool_tokens(states, mask), "cosine"))
    ours = compare_rdms(model, hyp, "spearman")
    assert ours == pytest.approx(_rsatoolbox_compare(model, hyp, "spearman"), abs=1e-12)


def test_pool_tokens_errors() -> None:
    states = np.zeros((3, 4, 2))
    mask = np.ones((3, 4), dtype=bool)
    mask[1] = False
    with pytest.raises(MetricError, match="1 items have no relevant token") as err:
        pool_tokens(states, mask)
    assert err.value.hint == "mark at least one token of every item in the mask"
    with pytest.raises(MetricError, match="mask must be a bool array"):
        pool_tokens(states, np.ones((3, 4), dtype=np.int64))
    with pytest.raises(MetricError, match="mask must be a bool array of shape \\[3, 4\\]"):
        pool_tokens(states, np.ones((3, 5), dtype=bool))
    with pytest.raises(MetricError, match="float \\[n, t, d\\]"):
        pool_tokens(np.zeros((3, 4)), mask)
