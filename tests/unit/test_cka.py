"""Linear CKA against a direct transcription of the published Gram-matrix formulas, on both
computation routes (feature products and Gram matrices), its invariances, and its errors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

import reprlab.worker.metrics.cka as cka_module
from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.cka import LABELS, cka_matrix, linear_cka

FloatArray = npt.NDArray[np.float64]


def _hsic_biased(k: FloatArray, m: FloatArray) -> float:
    """Gretton et al. 2005, as in Kornblith et al. 2019: tr(K H L H) / (n-1)^2, L = m."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ m @ h) / (n - 1) ** 2)


def _hsic_unbiased(k: FloatArray, m: FloatArray) -> float:
    """Song et al. 2012: with K~, L~ the kernels (L = m) with zero diagonals,
    [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), m - np.diag(np.diag(m))
    one = np.ones(n)
    total = (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    )
    return float(total / (n * (n - 3)))


def _reference_cka(x: FloatArray, y: FloatArray, debiased: bool) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels of the raw data."""
    hsic = _hsic_unbiased if debiased else _hsic_biased
    k, m = x @ x.T, y @ y.T
    return hsic(k, m) / np.sqrt(hsic(k, k) * hsic(m, m))


def _related(n: int, d1: int, d2: int, seed: int) -> tuple[FloatArray, FloatArray]:
    """x and a noisy linear image y of it, both with an offset."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) + rng.normal(size=d1) * 3
    y = x @ rng.normal(size=(d1, d2)) + rng.normal(size=(n, d2)) * 2 + 1.0
    return x, y


def _rotation(d: int, seed: int) -> FloatArray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# --- equal to the closed forms, on both routes ----------------------------------------------------


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(("n", "d1", "d2"), [(50, 6, 9), (20, 45, 30), (30, 5, 70)])
def test_linear_cka_equals_the_published_formulas(
    n: int, d1: int, d2: int, debiased: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = _related(n, d1, d2, seed=n + d1)
    ref = _reference_cka(x, y, debiased)
    assert 0.05 < abs(ref) < 0.999
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(ref, rel=1e-10)
    # The other route gives the same number: forbid Gram matrices to force feature products.
    monkeypatch.setattr(cka_module, "GRAM_BUDGET_BYTES", 0)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(ref, rel=1e-10)


def test_routes_are_chosen_by_cost() -> None:
    cheaper = cka_module._grams_are_cheaper
    assert not cheaper(1000, [64], [64], same=False)  # few features: products
    assert cheaper(1000, [4096], [4096], same=False)  # wide: Grams
    assert cheaper(5000, [4096], [4096], same=False)  # the benchmark size: n^2 d < 2 n d^2
    assert cheaper(2000, [576] * 30, [576] * 30, same=True)  # layer x layer: pairs dominate
    assert not cheaper(5000, [576] * 40, [576] * 40, same=True)  # Grams over the budget


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_equals_pairwise_linear_cka(
    debiased: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(size=(40, 8))
    layers = [base @ rng.normal(size=(8, d)) + rng.normal(size=(40, d)) * s for d, s in
              [(5, 0.5), (30, 1.0), (60, 2.0)]]  # fmt: skip
    other = [rng.normal(size=(40, 12)), base]
    for budget in (cka_module.GRAM_BUDGET_BYTES, 0):
        monkeypatch.setattr(cka_module, "GRAM_BUDGET_BYTES", budget)
        square = cka_matrix(layers, layers, debiased=debiased)
        assert square.shape == (3, 3)
        np.testing.assert_allclose(np.diag(square), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(square, square.T)
        cross = cka_matrix(layers, other, debiased=debiased)
        for i, a in enumerate(layers):
            for j, b in enumerate(layers):
                ref = _reference_cka(a, b, debiased)
                assert square[i, j] == pytest.approx(ref, rel=1e-10)
            for j, b in enumerate(other):
                assert cross[i, j] == pytest.approx(_reference_cka(a, b, debiased), rel=1e-10)


# --- properties -----------------------------------------------------------------------------------


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_rotation_isotropic_scaling_and_translation(debiased: bool) -> None:
    x, y = _related(60, 12, 80, seed=3)
    ref = linear_cka(x, y, debiased=debiased)
    moved_x = 7.5 * x @ _rotation(12, 1) + 4.0
    moved_y = 0.01 * y @ _rotation(80, 2) - 3.0
    for a, b in [(moved_x, y), (x, moved_y), (moved_x, moved_y)]:
        assert linear_cka(a, b, debiased=debiased) == pytest.approx(ref, rel=1e-9)
    assert linear_cka(y, x, debiased=debiased) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(("n", "d"), [(30, 5), (10, 50)])
def test_cka_of_a_representation_with_itself_is_one(n: int, d: int, debiased: bool) -> None:
    x = np.random.default_rng(n).normal(size=(n, d))
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, rel=1e-12)
    assert linear_cka(x, x.copy(), debiased=debiased) == pytest.approx(1.0, rel=1e-12)


def test_debiased_is_near_zero_for_independent_data_where_biased_is_not() -> None:
    rng = np.random.default_rng(11)
    biased, debiased = [], []
    for _ in range(20):
        x, y = rng.normal(size=(50, 40)), rng.normal(size=(50, 40))
        biased.append(linear_cka(x, y))
        debiased.append(linear_cka(x, y, debiased=True))
    assert abs(np.mean(debiased)) < 0.02
    assert np.mean(biased) > 0.3  # d close to n: the biased estimator is far from 0


def test_labels() -> None:
    assert LABELS == {False: "CKA, linear, biased", True: "CKA, linear, debiased"}


# --- errors ---------------------------------------------------------------------------------------


def test_errors_say_what_to_change() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3))
    with pytest.raises(MetricError, match="ys\\[0\\] has 9 items but xs\\[0\\] has 10") as err:
        linear_cka(x, x[:9])
    assert err.value.hint is not None and "same items" in err.value.hint
    with pytest.raises(MetricError, match="CKA, linear, debiased needs at least 4 items") as err:
        linear_cka(x[:3], x[:3], debiased=True)
    assert err.value.hint == "use more items, or the biased CKA"
    assert np.isfinite(linear_cka(x[:3], x[:3] ** 2))
    with pytest.raises(MetricError, match="biased needs at least 2 items"):
        linear_cka(x[:1], x[:1])
    with pytest.raises(MetricError, match="ys\\[0\\] has no variance"):
        linear_cka(x, np.full((10, 4), 0.1))  # centring leaves rounding noise: test exactly
    with pytest.raises(MetricError, match=r"must be an \[n, d\] array"):
        linear_cka(x[:, 0], x)
    with pytest.raises(MetricError, match="non-finite"):
        linear_cka(x, np.where(x > 1, np.nan, x))
    with pytest.raises(MetricError, match="at least one representation"):
        cka_matrix([], [x])
