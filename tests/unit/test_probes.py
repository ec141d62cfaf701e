"""Linear probes against scikit-learn's cross_val_score with the same pipeline and splitter,
on data whose answer is known, and their errors."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.probes import ProbeKind, ProbeResult, probe

FloatArray = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def classes() -> tuple[FloatArray, npt.NDArray[np.str_]]:
    """150 items of 3 string classes, overlapping in 10 features with unequal scales."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=150)
    x = rng.normal(size=(150, 10)) + np.eye(3, 10)[labels] * 1.2
    x *= np.geomspace(0.01, 100, 10)  # standardisation matters
    return x, np.array(["red", "green", "blue"])[labels]


@pytest.fixture(scope="module")
def regression() -> tuple[FloatArray, FloatArray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 8)) * np.geomspace(0.1, 10, 8)
    return x, x @ (rng.normal(size=8) / np.geomspace(0.1, 10, 8)) + rng.normal(size=120) * 1.5


# --- equal to scikit-learn's cross_val_score ------------------------------------------------------


@pytest.mark.parametrize(("folds", "seed", "c"), [(5, 0, 1.0), (3, 42, 0.05)])
def test_logistic_probe_equals_cross_val_score(
    classes: tuple[FloatArray, npt.NDArray[np.str_]], folds: int, seed: int, c: float
) -> None:
    x, y = classes
    ours = probe(x, y, "logistic", folds=folds, seed=seed, C=c)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    ref = cross_val_score(reference, x, y, cv=splitter, scoring="accuracy")
    np.testing.assert_allclose(ours.per_fold, ref, rtol=0, atol=1e-12)
    assert ours.mean == pytest.approx(ref.mean()) and ours.std == pytest.approx(ref.std(ddof=1))
    assert 0.6 < ours.mean < 1.0
    assert ours.metric == "accuracy"
    assert ours.label == f"logistic probe accuracy, {folds}-fold CV (C={c:g})"


@pytest.mark.parametrize(("folds", "seed", "alpha"), [(5, 0, 1.0), (4, 7, 30.0)])
def test_ridge_probe_equals_cross_val_score(
    regression: tuple[FloatArray, FloatArray], folds: int, seed: int, alpha: float
) -> None:
    x, y = regression
    ours = probe(x, y, "ridge", folds=folds, seed=seed, alpha=alpha)
    reference = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    ref = cross_val_score(reference, x, y, cv=splitter, scoring="r2")
    np.testing.assert_allclose(ours.per_fold, ref, rtol=0, atol=1e-12)
    assert ours.std == pytest.approx(np.std(ref, ddof=1))
    assert (
        ours.metric == "R^2" and ours.label == f"ridge probe R^2, {folds}-fold CV (alpha={alpha:g})"
    )
    assert 0.5 < ours.mean < 0.99


def test_scaler_is_fitted_on_the_training_folds_only(
    regression: tuple[FloatArray, FloatArray],
) -> None:
    """Scaling on all items first (a leak) gives different fold scores."""
    x, y = regression
    x = x.copy()
    x[:5] += 50.0  # outliers that move the scaler
    ours = probe(x, y, "ridge", alpha=30.0)
    leaky = cross_val_score(Ridge(alpha=30.0), StandardScaler().fit_transform(x), y,
                            cv=KFold(5, shuffle=True, random_state=0), scoring="r2")  # fmt: skip
    assert not np.allclose(ours.per_fold, leaky)


# --- known answers --------------------------------------------------------------------------------


def test_separable_classes_reach_accuracy_one() -> None:
    rng = np.random.default_rng(2)
    y = np.arange(100) % 2
    x = rng.normal(size=(100, 5))
    x[:, 0] = np.where(y == 1, 5.0, -5.0) + rng.uniform(-1, 1, size=100)
    result = probe(x, y, "logistic")
    assert result.per_fold == (1.0,) * 5 and result.mean == 1.0 and result.std == 0.0


def test_a_linear_target_gives_r2_of_one() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 6))
    result = probe(x, x @ rng.normal(size=6) + 2.0, "ridge", alpha=1e-6)
    assert min(result.per_fold) > 0.9999


def test_shuffled_labels_give_chance_accuracy(
    classes: tuple[FloatArray, npt.NDArray[np.str_]],
) -> None:
    x, y = classes
    real = probe(x, y, "logistic")
    rng = np.random.default_rng(4)
    shuffled = [probe(x, rng.permutation(y), "logistic", seed=s).mean for s in range(5)]
    assert abs(np.mean(shuffled) - 1 / 3) < 0.08
    assert real.mean > np.mean(shuffled) + 0.3


def test_result_is_frozen() -> None:
    result = ProbeResult(mean=1.0, std=0.0, per_fold=(1.0, 1.0), metric="accuracy", label="x")
    with pytest.raises(AttributeError):
        cast(Any, result).mean = 0.5


# --- errors ---------------------------------------------------------------------------------------


def test_errors_say_what_to_change() -> None:
    svm: Any = "svm"
    x = np.random.default_rng(5).normal(size=(20, 3))
    rare = np.array(["a"] * 17 + ["b"] * 3)
    with pytest.raises(MetricError, match="every class needs at least 5 items") as err:
        probe(x, rare, "logistic")
    assert err.value.hint == "use folds <= 3, or drop or merge the rare classes"
    assert "'b': 3" in err.value.message
    with pytest.raises(MetricError, match="at least 2 classes, got only 'a'"):
        probe(x, np.array(["a"] * 20), "logistic")
    y = np.arange(20.0) % 2
    y_nan = y.copy()
    y_nan[3] = np.nan
    kinds: tuple[ProbeKind, ...] = ("logistic", "ridge")
    for kind in kinds:
        with pytest.raises(MetricError, match="non-finite"):
            probe(x, y_nan, kind)
    with pytest.raises(MetricError, match="representations have non-finite"):
        probe(np.where(x > 2, np.inf, x), y, "ridge")
    with pytest.raises(MetricError, match="target is constant"):
        probe(x, np.ones(20), "ridge")
    with pytest.raises(MetricError, match="numeric targets"):
        probe(x, rare, "ridge")
    with pytest.raises(MetricError, match="folds must be between 2 and the number of items"):
        probe(x, y, "logistic", folds=1)
    with pytest.raises(MetricError, match="at most 10 folds, got 11"):
        probe(x, y, "ridge", folds=11)
    with pytest.raises(MetricError, match=r"x \[n, d\] and y \[n\]"):
        probe(x, y[:19], "ridge")
    with pytest.raises(MetricError, match="unknown probe kind 'svm'"):
        probe(x, y, svm)
    with pytest.raises(MetricError, match="C > 0"):
        probe(x, y, "logistic", C=0.0)
    with pytest.raises(MetricError, match="alpha >= 0"):
        probe(x, y, "ridge", alpha=-1.0)
    with pytest.raises(MetricError, match="labels cannot be ordered"):
        probe(x, np.array(["a", 1] * 10, dtype=object), "logistic")
