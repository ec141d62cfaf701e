"""Yousefi et al.'s last step: does representation change go with behavioural improvement?

A `CorrelationSpec` (the job spec's `correlations`) names a per-condition metric (RSA
alignment, attention ratio or probe accuracy) and a reference condition; the worker correlates
each condition's change of that metric from the reference with its change of accuracy, per
layer, across conditions, and for the attention ratio (a quantity of each query) also across
queries. `CorrelationResult` holds Pearson and Spearman r with bootstrap intervals. The exact
definitions are in docs/metrics.md ("Representation change vs behaviour"); this module is the
contract and the checks that need the whole job spec (`check_correlations`), which `JobSpec`
runs at submission.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from reprlab.schemas._base import ResponseModel, StrictModel
from reprlab.schemas.metrics import (
    NAME_PATTERN,
    AttentionRatioMetric,
    BootstrapSpec,
    ProbeMetric,
    RsaMetric,
)

if TYPE_CHECKING:
    from reprlab.schemas.specs import JobSpec

CorrelatedMetric = Literal["rsa", "attention_ratio", "probe"]
Scope = Literal["conditions", "items"]
Resample = Literal["items", "conditions"]
ATTENTION_STATS = ("ratio", "relevant", "irrelevant")


class CorrelationSpec(StrictModel):
    """Correlate the change of one metric curve with the change of accuracy, per layer.

    Change is relative to `reference`: Δ metric(c, l) = metric(c, l) - metric(reference, l)
    and Δ accuracy(c) = accuracy(c) - accuracy(reference).
    """

    metric: CorrelatedMetric = Field(
        description=(
            "The per-condition metric whose change is correlated: 'rsa', 'attention_ratio' or "
            "'probe'; it must be one of the job's metrics."
        )
    )
    curve: dict[str, str | int] | None = Field(
        default=None,
        description=(
            "Which of the metric's curves, by its parameters: {'hypothesis': NAME} (rsa), "
            "{'label': FIELD} (probe), {'stat': 'ratio'|'relevant'|'irrelevant'} and, with "
            "per-head extraction, {'stat': 'ratio', 'head': H} (attention_ratio). None: the "
            "main curve (the first hypothesis, the first probed label, the ratio)."
        ),
    )
    reference: str = Field(
        description=(
            "The result every change is measured from, e.g. 'zero-shot': a condition name, "
            "or one result of a sweep ('icl.k0') or of an SFT condition's checkpoints "
            "('sft.step0')."
        ),
        pattern=NAME_PATTERN,
    )
    conditions: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description=(
            "The points: condition names (all of a sweep's results but the reference) or result "
            "names. None: every result of the job but the reference."
        ),
    )
    layers: Literal["all"] | list[int] = Field(
        default="all",
        description=(
            "'all' extracted layers or a list of layer indices (numbered as extraction.layers, "
            "negatives from the end); each must be extracted."
        ),
    )
    across: list[Scope] | None = Field(
        default=None,
        description=(
            "'conditions': per layer, r over the points (one per condition, >= 3 needed). "
            "'items': per layer and condition, r over the queries of the per-query change of "
            "the metric and of correctness (attention_ratio only: the one per-query metric). "
            "None: both where defined."
        ),
    )
    resample: Resample | None = Field(
        default=None,
        description=(
            "What the across-conditions interval resamples: 'items' (the queries, with both "
            "sides recomputed on every resample: the metric from the stored activations, the "
            "accuracy from the per-query choices) or 'conditions' (the points). None: 'items' "
            "for rsa and attention_ratio, 'conditions' for probe (a probe cannot be refitted on "
            "resampled queries: copies of a query would fall in both train and test folds). "
            "Across items the queries are always resampled."
        ),
    )
    bootstrap: BootstrapSpec | None = Field(
        default_factory=BootstrapSpec,
        description="Percentile bootstrap of both r per layer; null: point estimates only.",
    )
    max_undefined: float = Field(
        default=0.01,
        ge=0.0,
        le=0.5,
        description=(
            "Largest fraction of resamples on which r may be undefined (a constant side, or "
            "fewer than 3 distinct conditions drawn) and be left out; above it the interval "
            "is null with the reason in the result's warnings. The count left out is reported."
        ),
    )

    @field_validator("layers")
    @classmethod
    def _layers_unique(cls, v: Literal["all"] | list[int]) -> Literal["all"] | list[int]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("correlation layers must be 'all' or distinct layer indices")
        return v

    @field_validator("across")
    @classmethod
    def _across_unique(cls, v: list[Scope] | None) -> list[Scope] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("across lists 'conditions' and/or 'items', each once")
        return v

    @model_validator(mode="after")
    def _defined(self) -> CorrelationSpec:
        if self.across is not None and "items" in self.across and self.metric != "attention_ratio":
            raise ValueError(
                f"correlation of {self.metric!r}: across 'items' is defined for attention_ratio "
                f"only (a value per query); {self.metric} is one value for all the queries, so "
                "use across: ['conditions']"
            )
        if self.metric == "probe" and self.resample == "items":
            raise ValueError(
                "correlation of 'probe': resample 'items' would refit the probes on resampled "
                "queries, whose copies fall in both train and test folds; use resample "
                "'conditions'"
            )
        return self

    @property
    def scopes(self) -> list[Scope]:
        """`across`, or every scope defined for the metric."""
        if self.across is not None:
            return list(self.across)
        return ["conditions", "items"] if self.metric == "attention_ratio" else ["conditions"]

    @property
    def resampling(self) -> Resample:
        """`resample`, or its default for the metric."""
        if self.resample is not None:
            return self.resample
        return "conditions" if self.metric == "probe" else "items"


def main_curve(metric: RsaMetric | ProbeMetric | AttentionRatioMetric) -> dict[str, str | int]:
    """The parameters of a metric's main curve (what `CorrelationSpec.curve` None selects)."""
    if isinstance(metric, RsaMetric):
        return {"hypothesis": metric.hypotheses[0].title}
    if isinstance(metric, ProbeMetric):
        return {"label": metric.labels[0]}
    return {"stat": "ratio"}


def result_names(spec: JobSpec) -> dict[str, list[str]]:
    """Spec condition name -> the names of its results (sweeps expanded, SFT checkpoints)."""
    out: dict[str, list[str]] = {}
    for cond in spec.conditions:
        steps = getattr(cond, "checkpoints", [])
        out[cond.name] = [
            name
            for one in cond.expanded_names()
            for name in [*(f"{one}.step{s}" for s in steps), one]
        ]
    return out


def check_correlations(spec: JobSpec) -> None:
    """ValueError naming what to fix when a correlation does not fit the job spec."""
    if spec.correlations and not spec.accuracy:
        raise ValueError(
            "correlations need the behavioural accuracy of every condition; set accuracy: true"
        )
    groups = result_names(spec)
    results = {name for names in groups.values() for name in names}
    for corr in spec.correlations:
        what = f"correlation of {corr.metric!r}"
        metric = next((m for m in spec.metrics if m.name == corr.metric), None)
        if metric is None:
            listed = ", ".join(m.name for m in spec.metrics) or "none"
            raise ValueError(
                f"{what}: {corr.metric!r} is not among the job's metrics ({listed}); add "
                f"{{name: {corr.metric}}} to metrics"
            )
        _check_reference(what, corr.reference, groups, results)
        for name in corr.conditions or []:
            if name not in groups and name not in results:
                raise ValueError(
                    f"{what}: conditions names {name!r}, which is no condition or result of "
                    f"this job; conditions are {sorted(groups)}"
                )
            if name == corr.reference:
                raise ValueError(
                    f"{what}: the reference {corr.reference!r} is also one of its conditions; "
                    "changes are measured from it, so leave it out of conditions"
                )
        if not isinstance(metric, RsaMetric | ProbeMetric | AttentionRatioMetric):
            raise ValueError(f"{what}: {corr.metric!r} has no curves to correlate")
        _check_curve(what, corr.curve, metric, spec)
        _check_layers(what, corr.layers, spec.extraction.layers)


def _check_reference(
    what: str, reference: str, groups: dict[str, list[str]], results: set[str]
) -> None:
    if reference in results:
        return
    if reference in groups:
        raise ValueError(
            f"{what}: the reference {reference!r} has several results "
            f"({', '.join(groups[reference])}); name one of them"
        )
    raise ValueError(
        f"{what}: the reference {reference!r} names no condition of this job; conditions are "
        f"{sorted(groups)} (results {sorted(results)})"
    )


def _check_curve(
    what: str,
    curve: dict[str, Any] | None,
    metric: RsaMetric | ProbeMetric | AttentionRatioMetric,
    spec: JobSpec,
) -> None:
    if curve is None:
        return
    if isinstance(metric, RsaMetric):
        _curve_key(what, curve, "hypothesis", [h.title for h in metric.hypotheses])
    elif isinstance(metric, ProbeMetric):
        _curve_key(what, curve, "label", list(metric.labels))
    else:
        head = curve.get("head")
        _curve_key(what, {k: v for k, v in curve.items() if k != "head"}, "stat", ATTENTION_STATS)
        if head is None:
            return
        att = spec.extraction.attention
        if curve["stat"] != "ratio" or att is None or not att.per_head:
            raise ValueError(
                f"{what}: curve 'head' needs stat 'ratio' and extraction.attention.per_head: true"
            )
        if not isinstance(head, int) or head < 0:
            raise ValueError(f"{what}: curve 'head' must be a head index >= 0, got {head!r}")


def _curve_key(what: str, curve: dict[str, Any], key: str, allowed: Any) -> None:
    if set(curve) != {key} or curve[key] not in allowed:
        raise ValueError(
            f"{what}: curve {curve} selects no curve of the metric; give {{{key!r}: one of "
            f"{list(allowed)}}}"
        )


def _check_layers(what: str, layers: Literal["all"] | list[int], extracted: Any) -> None:
    """Where both lists are plain indices, the correlated ones must be extracted (negative
    indices are checked against the model's depth before any model work)."""
    if layers == "all" or extracted == "all":
        return
    if any(i < 0 for i in layers) or any(i < 0 for i in extracted):
        return
    missing = sorted(set(layers) - set(extracted))
    if missing:
        raise ValueError(
            f"{what}: layers {missing} are not extracted (extraction.layers is {extracted}); "
            "correlate extracted layers only"
        )


class CorrelationResult(ResponseModel):
    """Pearson and Spearman r of Δ metric vs Δ behaviour per layer, with bootstrap intervals.

    Across conditions, the points are the results named in `points`; across items, the
    queries of `condition` against the same queries of `reference`.
    """

    metric: str = Field(description="The correlated metric: 'rsa', 'attention_ratio', 'probe'.")
    curve: dict[str, Any] = Field(description="Parameters of the metric's curve, as in curves.")
    across: Scope = Field(description="'conditions' or 'items' (queries).")
    reference: str = Field(description="The result changes are measured from.")
    condition: str | None = Field(
        default=None, description="Across items: the condition whose queries are correlated."
    )
    points: list[str] = Field(
        description="Across conditions: the results that are the points, in order."
    )
    label: str = Field(description="Exactly what is correlated, e.g. 'r of Δ ... vs Δ ...'.")
    x: str = Field(description="The representation side, e.g. 'Δ RSA: Spearman ... (vs ...)'.")
    y: str = Field(description="The behavioural side, e.g. 'Δ accuracy'.")
    layers: list[int] = Field(description="Layer indices.")
    n: list[int] = Field(description="Per layer, the points (conditions or queries) used.")
    pearson: list[float | None] = Field(description="Pearson r per layer; null where undefined.")
    pearson_p: list[float | None] = Field(
        description="Two-sided p-value of Pearson r (scipy.stats.pearsonr, t distribution)."
    )
    pearson_ci_low: list[float | None] | None = Field(
        default=None, description="Lower end of the bootstrap interval of Pearson r per layer."
    )
    pearson_ci_high: list[float | None] | None = Field(
        default=None, description="Upper end of the bootstrap interval of Pearson r per layer."
    )
    spearman: list[float | None] = Field(
        description="Spearman r per layer (Pearson r of average ranks); null where undefined."
    )
    spearman_p: list[float | None] = Field(
        description="Two-sided p-value of Spearman r (scipy.stats.spearmanr, t approximation)."
    )
    spearman_ci_low: list[float | None] | None = Field(
        default=None, description="Lower end of the bootstrap interval of Spearman r per layer."
    )
    spearman_ci_high: list[float | None] | None = Field(
        default=None, description="Upper end of the bootstrap interval of Spearman r per layer."
    )
    ci: str | None = Field(
        default=None,
        description="How the intervals were made (coverage, resamples, what was resampled).",
    )
    undefined_resamples: list[int | None] | None = Field(
        default=None,
        description="Per layer, resamples left out because r was undefined on them.",
    )
    delta_behaviour: list[float] = Field(
        default_factory=list,
        description="Across conditions: Δ accuracy of each point, in `points` order.",
    )
    delta_metric: list[list[float | None]] = Field(
        default_factory=list,
        description="Across conditions: per layer, Δ metric of each point (null: undefined).",
    )
    warnings: list[str] = Field(
        default_factory=list, description="Why some values or intervals are null."
    )
