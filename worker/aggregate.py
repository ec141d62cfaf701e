"""Across results: mean and spread over seeds, and comparisons between conditions.

Pure functions of results and activations; the pipeline calls them after the per-condition
metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from reprlab.schemas.metrics import BootstrapSpec, ComparisonSpec
from reprlab.schemas.results import (
    AccuracySummary,
    AggregateResult,
    ComparisonResult,
    ConditionResult,
    LayerCurve,
)
from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.bootstrap import MAX_UNDEFINED, percentile_interval
from reprlab.worker.metrics.compare import PairCurves, compare_states, graph_k
from reprlab.worker.metrics.graphs import GraphCache

_SEED_PART = re.compile(r"\.s\d+(?=$|\.)")


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def seed_aggregates(results: Sequence[ConditionResult]) -> list[AggregateResult]:
    """Mean and sample standard deviation over results that differ only in their seed.

    Members share the spec condition, paradigm, k and SFT step; only groups of two or more
    are aggregated. A layer where any member's value is null is null in the aggregate.
    """
    groups: dict[tuple[str | None, str, int | None, int | None, str], list[ConditionResult]] = {}
    for r in results:
        name = _SEED_PART.sub("", r.name)
        if name == r.name:
            continue
        groups.setdefault((r.group, r.paradigm, r.k, r.step, name), []).append(r)
    out = []
    for (group, _, k, step, name), members in groups.items():
        if len(members) < 2:
            continue
        out.append(
            AggregateResult(
                name=name,
                group=group or name,
                members=[m.name for m in members],
                k=k,
                step=step,
                curves=_mean_curves(members),
                accuracy=_accuracy(members),
            )
        )
    return out


def _mean_curves(members: Sequence[ConditionResult]) -> list[LayerCurve]:
    curves = []
    first = members[0]
    for curve in first.curves:
        key = json.dumps(curve.params, sort_keys=True)
        same = [
            c
            for m in members
            for c in m.curves
            if c.metric == curve.metric and json.dumps(c.params, sort_keys=True) == key
        ]
        if len(same) != len(members) or any(c.layers != curve.layers for c in same):
            continue
        means, spreads = _mean_std([c.values for c in same])
        curves.append(
            LayerCurve(
                metric=curve.metric,
                label=f"{curve.label}, mean over {len(same)} seeds",
                params=curve.params,
                layers=curve.layers,
                values=means,
                spread=spreads,
            )
        )
    return curves


def _accuracy(members: Sequence[ConditionResult]) -> AccuracySummary | None:
    if any(m.behaviour is None for m in members):
        return None
    values = [m.behaviour.accuracy for m in members if m.behaviour is not None]
    return AccuracySummary(mean=float(np.mean(values)), std=_std(values), values=values)


@dataclass(frozen=True)
class Member:
    """What a comparison needs of one analysed point.

    `step` is the SFT step of a checkpoint result and None for the final weights (and for
    ICL results).
    """

    name: str
    group: str
    swept: dict[str, float]
    layers: list[int]
    states: torch.Tensor  # [n_items, n_layers, hidden]
    step: int | None = None


PairGroup = tuple[int | None, float | None, int | None]  # (k, label_noise, b's step)


def pairs_of(
    members: Sequence[Member], spec: ComparisonSpec
) -> dict[PairGroup, list[tuple[Member, Member]]]:
    """The comparison's pairs (a member of a, a member of b), grouped by swept k, swept label
    noise and b's step.

    Members pair when they agree on every dimension both conditions sweep (k, seed); a
    condition that sweeps nothing pairs with every member of the other. Side a is final
    weights only; side b is final weights, or each checkpoint with `spec.steps`.
    """
    side_a = [m for m in members if m.group == spec.a and m.step is None]
    side_b = [m for m in members if m.group == spec.b and (m.step is not None) == spec.steps]
    groups: dict[PairGroup, list[tuple[Member, Member]]] = {}
    for ma in side_a:
        for mb in side_b:
            shared = set(ma.swept) & set(mb.swept)
            if any(ma.swept[d] != mb.swept[d] for d in shared) or ma.name == mb.name:
                continue
            if ma.layers != mb.layers:
                raise ValueError(f"{ma.name} and {mb.name} were extracted at different layers")
            k = ma.swept.get("k", mb.swept.get("k"))
            noise = ma.swept.get("label_noise", mb.swept.get("label_noise"))
            group = (None if k is None else int(k), noise, mb.step)
            groups.setdefault(group, []).append((ma, mb))
    return groups


def comparison_graph_k(
    comparisons: Sequence[ComparisonSpec], members: Sequence[Member]
) -> dict[str, int]:
    """Per member name: the most neighbours any comparison's kNN graphs of it need (if any)."""
    need: dict[str, int] = {}
    for spec in comparisons:
        for pairs in pairs_of(members, spec).values():
            for pair in pairs:
                for m in pair:
                    k = graph_k(spec, m.states.shape[0])
                    if k > need.get(m.name, 0):
                        need[m.name] = k
    return need


def compare_conditions(
    members: Sequence[Member],
    spec: ComparisonSpec,
    device: torch.device | None = None,
    graphs: GraphCache | None = None,
) -> tuple[list[ComparisonResult], list[str]]:
    """Pair the members of spec conditions `spec.a` and `spec.b` and compare each pair per layer.

    Pairs are those of `pairs_of`: only final weights are compared, unless `spec.steps`:
    then a is compared with each checkpoint of b. Pairs are grouped by the swept k (and step)
    and reported per curve as mean and sample standard deviation over the pairs; a layer
    where any pair is undefined is null. With
    `spec.bootstrap`, `ci_low`/`ci_high` are the percentile interval of that mean: every pair
    is resampled with the same queries, and each resample's statistic averaged over the pairs.

    Args:
        members: every analysed point of the job.
        spec: the comparison.
        device: where kNN graphs are computed (default CPU).
        graphs: the job's kNN graph cache (keys: member name, layer); None: none kept.

    Returns:
        The comparison results and warnings (why values are null).
    """
    device = device if device is not None else torch.device("cpu")
    groups = pairs_of(members, spec)
    out: list[ComparisonResult] = []
    warnings: list[str] = []
    order = sorted(groups.items(), key=lambda kv: tuple(-1 if v is None else v for v in kv[0]))
    for (k, noise, step), pairs in order:
        if spec.bootstrap is not None and len({m.states.shape[0] for p in pairs for m in p}) > 1:
            raise ValueError(f"the pairs of {spec.a} vs {spec.b} analyse different queries")
        per_pair = [
            compare_states(spec, ma.states, mb.states, ma.layers, device, graphs=graphs,
                           names=(ma.name, mb.name))
            for ma, mb in pairs
        ]  # fmt: skip
        for j, first in enumerate(per_pair[0]):
            curves = [curves[j] for curves in per_pair]
            warnings += sorted({f"{spec.a} vs {spec.b}: {w}" for c in curves for w in c.warnings})
            mean, std = _mean_std([c.values for c in curves])
            matrix = None
            if first.matrix is not None:
                rows = [_mean_std([c.matrix[i] for c in curves if c.matrix is not None])[0]
                        for i in range(len(first.matrix))]  # fmt: skip
                matrix = rows
            ci_low = ci_high = None
            if spec.bootstrap is not None:
                ci_low, ci_high, why = _mean_interval(spec.bootstrap, curves, pairs[0][0].layers)
                warnings += [f"{spec.a} vs {spec.b}: {first.label}: {w}" for w in why]
            out.append(
                ComparisonResult(
                    metric=spec.metric,
                    label=first.label,
                    params=first.params,
                    a=spec.a,
                    b=spec.b,
                    k=k,
                    label_noise=noise,
                    step=step,
                    layers=pairs[0][0].layers,
                    mean=mean,
                    std=std,
                    pairs=[[ma.name, mb.name] for ma, mb in pairs],
                    matrix=matrix,
                    ci_low=ci_low,
                    ci_high=ci_high,
                )
            )
    return out, warnings


def _mean_interval(
    spec: BootstrapSpec, curves: Sequence[PairCurves], layers: Sequence[int]
) -> tuple[list[float | None], list[float | None], list[str]]:
    """Per layer, the percentile interval of the mean over pairs of the resampled statistics.

    The pairs' resamples are of the same queries, so their mean on each resample is the
    mean over pairs on that resample. Null where a pair has no resamples (its value is null),
    or where the mean is undefined on more than `MAX_UNDEFINED` of the resamples (with why).
    """
    lows: list[float | None] = []
    highs: list[float | None] = []
    why: list[str] = []
    for j, layer in enumerate(layers):
        draws = [d for d in (_draws(c, j) for c in curves) if d is not None]
        low: float | None = None
        high: float | None = None
        if len(draws) == len(curves):
            try:
                low, high = percentile_interval(
                    np.mean(np.stack(draws), axis=0), spec.confidence,
                    max_undefined=MAX_UNDEFINED, what="the comparison",
                    hint="analyse more queries",
                )  # fmt: skip
            except MetricError as exc:
                why.append(f"layer {layer}: {exc.message}")
        lows.append(low)
        highs.append(high)
    return lows, highs, why


def _draws(curve: PairCurves, j: int) -> npt.NDArray[np.float64] | None:
    return None if curve.resampled is None else curve.resampled[j]


def _mean_std(
    rows: Sequence[Sequence[float | None]],
) -> tuple[list[float | None], list[float | None]]:
    """Per column: mean and sample std over rows; None where any row is None."""
    means: list[float | None] = []
    stds: list[float | None] = []
    for col in zip(*rows, strict=True):
        vals = [v for v in col if v is not None]
        if len(vals) < len(col):
            means.append(None)
            stds.append(None)
        else:
            means.append(float(np.mean(vals)))
            stds.append(_std(vals))
    return means, stds
