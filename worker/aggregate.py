"""Across results: mean and spread over seeds, and cross-condition cosine similarity.

Pure functions of results and activations; the pipeline calls them after the per-condition
metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from reprlab.schemas.results import (
    AccuracySummary,
    AggregateResult,
    ComparisonResult,
    ConditionResult,
    LayerCurve,
)

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
        means: list[float | None] = []
        spreads: list[float | None] = []
        for j in range(len(curve.layers)):
            col = [c.values[j] for c in same]
            if any(v is None for v in col):
                means.append(None)
                spreads.append(None)
            else:
                vals = [float(v) for v in col if v is not None]
                means.append(float(np.mean(vals)))
                spreads.append(_std(vals))
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
    """What a comparison needs of one analysed point."""

    name: str
    group: str
    swept: dict[str, int]
    layers: list[int]
    states: torch.Tensor  # [n_items, n_layers, hidden]


def cosine_per_layer(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Mean over items of cos(a_i, b_i) at each layer; inputs [n_items, n_layers, hidden]."""
    if a.shape != b.shape:
        raise ValueError(f"states differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)
    return [float(v) for v in cos.mean(dim=0)]


def cosine_comparisons(
    members: Sequence[Member], a: str, b: str, metric: str = "cosine"
) -> list[ComparisonResult]:
    """Pair the members of spec conditions `a` and `b` and compare each pair per layer.

    Members pair when they agree on every dimension both conditions sweep (k, seed); a
    condition that sweeps nothing pairs with every member of the other. Pairs are grouped by
    the swept k (if any) and reported as mean and sample standard deviation over the pairs.
    """
    side_a = [m for m in members if m.group == a]
    side_b = [m for m in members if m.group == b]
    groups: dict[int | None, list[tuple[Member, Member, list[float]]]] = {}
    for ma in side_a:
        for mb in side_b:
            shared = set(ma.swept) & set(mb.swept)
            if any(ma.swept[d] != mb.swept[d] for d in shared) or ma.name == mb.name:
                continue
            if ma.layers != mb.layers:
                raise ValueError(f"{ma.name} and {mb.name} were extracted at different layers")
            k = ma.swept.get("k", mb.swept.get("k"))
            groups.setdefault(k, []).append((ma, mb, cosine_per_layer(ma.states, mb.states)))
    out = []
    for k, pairs in sorted(groups.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
        table = np.array([p[2] for p in pairs])
        out.append(
            ComparisonResult(
                metric=metric,
                a=a,
                b=b,
                k=k,
                layers=pairs[0][0].layers,
                mean=[float(v) for v in table.mean(axis=0)],
                std=[_std(list(col)) for col in table.T],
                pairs=[[p[0].name, p[1].name] for p in pairs],
            )
        )
    return out
