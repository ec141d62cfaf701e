"""Linear probes: cross-validated decoding of an item label or value from a representation.

A probe is a scikit-learn pipeline, StandardScaler then LogisticRegression (classification,
accuracy) or Ridge (regression, R^2), fitted on the training part of each fold only, so the
test items never inform the feature scaling. Folds are StratifiedKFold (classification) or
KFold (regression), both shuffled with the seed. This is the parameterised probing of
Yousefi et al. (2023): one probe per layer, compared across conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from reprlab.worker.errors import MetricError

ProbeKind = Literal["logistic", "ridge"]


@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated score of one probe.

    Attributes:
        mean: mean score over the folds.
        std: standard deviation of the fold scores (ddof=1).
        per_fold: the score of each fold, in split order.
        metric: "accuracy" (logistic) or "R^2" (ridge).
        label: the exact estimator, e.g. "logistic probe accuracy, 5-fold CV (C=1)".
    """

    mean: float
    std: float
    per_fold: tuple[float, ...]
    metric: str
    label: str


def probe(
    x: npt.ArrayLike,
    y: Sequence[Any] | npt.ArrayLike,
    kind: ProbeKind,
    folds: int = 5,
    seed: int = 0,
    *,
    C: float = 1.0,
    alpha: float = 1.0,
    max_iter: int = 1000,
) -> ProbeResult:
    """Cross-validated linear probe of y from x.

    "logistic": StandardScaler + LogisticRegression(C, lbfgs, multinomial for > 2 classes),
    scored by accuracy on each held-out fold of StratifiedKFold(folds, shuffle, seed).
    "ridge": StandardScaler + Ridge(alpha), scored by R^2 (1 - SS_res / SS_tot of the fold)
    on each held-out fold of KFold(folds, shuffle, seed).

    Args:
        x: [n, d] representations.
        y: n class labels (logistic) or n finite numbers (ridge).
        kind: "logistic" or "ridge".
        folds: number of folds, >= 2.
        seed: seed of the fold shuffle.
        C: inverse L2 strength of the logistic probe.
        alpha: L2 strength of the ridge probe.
        max_iter: iteration limit of the logistic solver.

    Raises:
        MetricError: bad shapes or parameters, non-finite x or y, a single class, a class
            with fewer items than folds, a constant regression target.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y)
    if xa.ndim != 2 or ya.ndim != 1 or xa.shape[0] != ya.shape[0]:
        raise MetricError(
            f"a probe needs x [n, d] and y [n]; got {list(xa.shape)} and {list(ya.shape)}"
        )
    if not np.all(np.isfinite(xa)):
        raise MetricError("the probe's representations have non-finite values")
    if folds < 2 or folds > xa.shape[0]:
        raise MetricError(
            f"folds must be between 2 and the number of items ({xa.shape[0]}), got {folds}"
        )
    if kind == "logistic":
        return _run(xa, _classes(ya, folds), kind, _logistic(C, max_iter), folds, seed)
    if kind == "ridge":
        if folds > xa.shape[0] // 2:
            raise MetricError(
                f"R^2 needs at least 2 held-out items per fold; {xa.shape[0]} items allow at "
                f"most {xa.shape[0] // 2} folds, got {folds}"
            )
        return _run(xa, _target(ya), kind, _ridge(alpha), folds, seed)
    raise MetricError(f"unknown probe kind {kind!r}", hint="use 'logistic' or 'ridge'")


def _run(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[Any],
    kind: ProbeKind,
    pipeline: Pipeline,
    folds: int,
    seed: int,
) -> ProbeResult:
    if kind == "logistic":
        splitter: KFold | StratifiedKFold = StratifiedKFold(folds, shuffle=True, random_state=seed)
        metric, score, param = "accuracy", accuracy_score, f"C={pipeline[-1].C:g}"
    else:
        splitter = KFold(folds, shuffle=True, random_state=seed)
        metric, score, param = "R^2", r2_score, f"alpha={pipeline[-1].alpha:g}"
    scores = []
    for train, test in splitter.split(x, y):
        model = clone(pipeline).fit(x[train], y[train])
        scores.append(float(score(y[test], model.predict(x[test]))))
    if not np.all(np.isfinite(scores)):
        raise MetricError(
            f"{metric} is undefined in a fold (its held-out targets are all equal)",
            hint="use fewer folds or more varied targets",
        )
    return ProbeResult(
        mean=float(np.mean(scores)),
        std=float(np.std(scores, ddof=1)),
        per_fold=tuple(scores),
        metric=metric,
        label=f"{kind} probe {metric}, {folds}-fold CV ({param})",
    )


def _logistic(C: float, max_iter: int) -> Pipeline:
    if not C > 0 or max_iter < 1:
        raise MetricError(f"the logistic probe needs C > 0 and max_iter >= 1, got {C}, {max_iter}")
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))


def _ridge(alpha: float) -> Pipeline:
    if not alpha >= 0:
        raise MetricError(f"the ridge probe needs alpha >= 0, got {alpha}")
    return make_pipeline(StandardScaler(), Ridge(alpha=alpha))


def _classes(y: npt.NDArray[Any], folds: int) -> npt.NDArray[Any]:
    if np.issubdtype(y.dtype, np.number) and not np.all(np.isfinite(y.astype(np.float64))):
        raise MetricError("the probe's labels have non-finite values")
    try:
        labels, counts = np.unique(y, return_counts=True)
    except TypeError:
        raise MetricError(
            "the probe's labels cannot be ordered", hint="use all strings or all numbers"
        ) from None
    if labels.size < 2:
        raise MetricError(
            f"a classification probe needs at least 2 classes, got only {labels[0]!r}",
            hint="probe a label that varies across items",
        )
    small = {str(lab): int(c) for lab, c in zip(labels, counts, strict=True) if c < folds}
    if small:
        raise MetricError(
            f"every class needs at least {folds} items for {folds}-fold stratified CV; "
            f"too few: {small}",
            hint=f"use folds <= {int(counts.min())}, or drop or merge the rare classes",
        )
    return y


def _target(y: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    try:
        t = y.astype(np.float64)
    except (TypeError, ValueError):
        raise MetricError(
            "a ridge probe needs numeric targets", hint="use kind='logistic' for labels"
        ) from None
    if not np.all(np.isfinite(t)):
        raise MetricError("the probe's targets have non-finite values")
    if np.all(t == t[0]):
        raise MetricError("the probe's target is constant: R^2 is undefined")
    return t
