"""Representation change vs behavioural gain (Yousefi et al.), per layer.

Yousefi et al. ask whether the layers whose representations change most under ICL are the
ones that explain the improvement in behaviour. A correlation is a statistic of finished
conditions (their curves and accuracies), so it runs after every condition's metrics, like the
comparisons, and reads nothing the job did not already store: the curves, the per-query
choices of the behavioural scoring, and the activations (states and attention masses).

With reference condition r, for each other condition c (a point) and layer l:

- across conditions: x_c = metric(c, l) - metric(r, l) from the curves, y_c = accuracy(c) -
  accuracy(r); Pearson and Spearman r over the points (>= 3 with a value at l).
- across items (attention_ratio, the one per-query metric): for each condition c, over the
  queries i: x_i = a_i(c, l) - a_i(r, l), the per-query attention quantity of the selected
  curve (relevant over irrelevant mass of query i, heads summed), and y_i = correct_i(c) -
  correct_i(r) in {-1, 0, 1}, correct_i = 1 when query i's most likely option is its gold one.

Intervals are percentile bootstraps from the repo's engine (`resample_statistics`,
`percentile_interval`). Across conditions they resample the queries by default and recompute
both sides on every resample (every result on the same draws): the metric from the stored
activations (the attention ratio of the drawn queries' summed masses; RSA on the pairs of
distinct drawn queries), the accuracy from the drawn queries' choices. That is the uncertainty
a finite query sample puts on r with these conditions fixed; resampling the few conditions
instead (resample 'conditions', the only choice for probes, which cannot be refitted on
resampled queries) asks how r varies over conditions, but few points make it degenerate: r is
undefined on a resample that draws fewer than 3 distinct conditions, a third of them for 4
points (2% for 6).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from scipy import stats

from reprlab.schemas.correlations import CorrelationResult, CorrelationSpec, Scope, main_curve
from reprlab.schemas.metrics import AttentionRatioMetric, BootstrapSpec, ProbeMetric, RsaMetric
from reprlab.schemas.results import ConditionResult
from reprlab.schemas.specs import JobSpec
from reprlab.worker.data import Dataset
from reprlab.worker.errors import MetricError, SpecError
from reprlab.worker.extract import Activations, resolve_layers
from reprlab.worker.metrics.base import LabelValue, LayerInput
from reprlab.worker.metrics.bootstrap import (
    Statistic,
    mean_statistic,
    percentile_interval,
    ratio_statistic,
    rdm_statistic,
    resample_statistics,
)
from reprlab.worker.metrics.rsa import rdm, standardise
from reprlab.worker.metrics.suite import RsaImpl
from reprlab.worker.pipeline_context import JobContext, timed_stage
from reprlab.worker.pipeline_units import Unit

__all__ = ["CorrelationInputs", "check_correlation_layers", "correlate", "correlation_results"]

FloatArray = npt.NDArray[np.float64]
CorrelatedMetric = RsaMetric | ProbeMetric | AttentionRatioMetric
_BEHAVIOUR = "accuracy (the gold option has the highest log-likelihood)"
_CORRECTNESS = "correctness per query (1: the gold option has the highest log-likelihood, else 0)"


@dataclass(frozen=True)
class CorrelationInputs:
    """What correlations read besides the results.

    Attributes:
        n_blocks: the model's number of blocks (resolves negative layer indices).
        gold: per query, its gold output (an option text); None when the data has none.
        acts: result name -> its activations, for resampling queries and across items.
        labels: label field -> one value per query (RSA hypotheses from labels).
        check_stop: called between layers; raises to stop (a cancelled job, its time limit).
    """

    n_blocks: int
    gold: Sequence[str] | None = None
    acts: Mapping[str, Activations] | None = None
    labels: Mapping[str, Sequence[LabelValue]] | None = None
    check_stop: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class _Setup:
    """One correlation of the spec, resolved against the job's results."""

    corr: CorrelationSpec
    metric: CorrelatedMetric
    curve: dict[str, str | int]
    reference: ConditionResult
    points: list[ConditionResult]
    layers: list[int]
    inputs: CorrelationInputs


@dataclass(frozen=True)
class _R:
    """Pearson and Spearman r of one set of points, with scipy's p-values."""

    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float


def correlation_results(
    ctx: JobContext,
    results: Sequence[ConditionResult],
    units: Sequence[Unit],
    dataset: Dataset,
    labels: Mapping[str, Sequence[LabelValue]],
) -> list[CorrelationResult]:
    """The job's correlations (pipeline stage 'correlations'), after its conditions' results."""
    if not ctx.spec.correlations:
        return []
    inputs = CorrelationInputs(
        n_blocks=ctx.model_info().n_layers,
        gold=[q.output for q in dataset.eval] if dataset.options else None,
        acts={u.name: u.acts for u in units if u.acts is not None},
        labels=labels,
        check_stop=ctx.check_stop,
    )
    with timed_stage(ctx.reporter, "correlations") as rec:
        ctx.reporter.progress("correlations", 0.96, f"{len(ctx.spec.correlations)} correlations")
        out = correlate(ctx.spec, results, inputs)
        rec.detail = f"{len(out)} correlation results"
        undefined = sum(bool(c.warnings) for c in out)
        if undefined:
            rec.detail += f"; {undefined} with undefined values (see their warnings)"
    return out


def correlate(
    spec: JobSpec, results: Sequence[ConditionResult], inputs: CorrelationInputs
) -> list[CorrelationResult]:
    """Every correlation of the spec: one result across conditions, one per point across items.

    Raises:
        SpecError: a reference or condition that names no result, or a layer not extracted.
        MetricError: item resampling without the per-query data it needs.
    """
    out: list[CorrelationResult] = []
    for corr in spec.correlations:
        setup = _setup(spec, corr, results, inputs)
        if "conditions" in corr.scopes:
            out.append(_across_conditions(setup))
        if "items" in corr.scopes:
            out += [_across_items(setup, point) for point in setup.points]
    return out


def check_correlation_layers(spec: JobSpec, n_blocks: int) -> None:
    """SpecError, before any model work, if a correlation names a layer that is not extracted."""
    if n_blocks < 1:
        return  # the depth is found by the extraction; `correlate` checks then
    extracted = resolve_layers(spec.extraction.layers, n_blocks)
    for corr in spec.correlations:
        _resolve_layers(corr, extracted, n_blocks)


def _resolve_layers(corr: CorrelationSpec, extracted: list[int], n_blocks: int) -> list[int]:
    if corr.layers == "all":
        return list(extracted)
    what = f"correlation of {corr.metric!r}"
    try:
        wanted = resolve_layers(corr.layers, n_blocks)
    except SpecError as exc:
        raise SpecError(f"{what}: {exc.message}", exc.hint) from None
    missing = [layer for layer in wanted if layer not in extracted]
    if missing:
        raise SpecError(
            f"{what}: layers {missing} are not extracted (extracted: {extracted})",
            hint="correlate extracted layers only, or add them to extraction.layers",
        )
    return wanted


def _setup(
    spec: JobSpec,
    corr: CorrelationSpec,
    results: Sequence[ConditionResult],
    inputs: CorrelationInputs,
) -> _Setup:
    metric = next(m for m in spec.metrics if m.name == corr.metric)
    if not isinstance(metric, RsaMetric | ProbeMetric | AttentionRatioMetric):
        raise SpecError(f"metric {corr.metric!r} cannot be correlated")
    by_name = {r.name: r for r in results}
    reference = by_name.get(corr.reference)
    if reference is None:
        raise SpecError(
            f"correlation of {corr.metric!r}: no result named {corr.reference!r}; results are "
            f"{sorted(by_name)}",
            hint="name one result of the job as the reference",
        )
    wanted = corr.conditions
    points = [
        r
        for r in results
        if r.name != reference.name
        and (wanted is None or r.name in wanted or (r.group is not None and r.group in wanted))
    ]
    n_blocks = inputs.n_blocks if inputs.n_blocks > 0 else max(reference.layers)
    layers = _resolve_layers(corr, reference.layers, n_blocks)
    curve = dict(corr.curve) if corr.curve is not None else main_curve(metric)
    return _Setup(corr, metric, curve, reference, points, layers, inputs)


# --- across conditions ----------------------------------------------------------------------


def _across_conditions(s: _Setup) -> CorrelationResult:
    why: list[str] = []
    ref_acc = _accuracy(s.reference)
    if ref_acc is None:
        why.append(f"the reference {s.reference.name!r} has no accuracy")
    points = [p for p in s.points if _accuracy(p) is not None]
    why += [f"{p.name}: no accuracy; left out" for p in s.points if _accuracy(p) is None]
    dy = [float(_accuracy(p) or 0.0) - float(ref_acc or 0.0) for p in points]
    ref_values = _curve_values(s.reference, s)
    values = [_curve_values(p, s) for p in points]
    deltas = [[_minus(v[j], ref_values[j]) for v in values] for j in range(len(s.layers))]
    out = _empty_result(s, "conditions", points=[p.name for p in points])
    out.delta_behaviour = dy if ref_acc is not None else []
    out.delta_metric = deltas
    boot = None
    if s.corr.bootstrap is not None and ref_acc is not None:
        try:
            boot = _ConditionBootstrap(s, points)
        except MetricError as exc:
            why.append(f"no intervals: {exc.message}")
    for j, layer in enumerate(s.layers):
        s.inputs.check_stop()
        keep = [i for i, d in enumerate(deltas[j]) if d is not None and ref_acc is not None]
        x = np.array([deltas[j][i] for i in keep], dtype=np.float64)
        y = np.array([dy[i] for i in keep], dtype=np.float64)
        r, reason = _point(x, y, "condition")
        if r is None and ref_values[j] is None:
            reason = f"the reference {s.reference.name!r} has no value of the curve here"
        _fill(out, j, len(keep), r, reason, layer, why)
        if boot is not None and r is not None:
            ends, undefined, problem = boot.interval(layer, keep, x, y)
            _fill_interval(out, j, ends, undefined, problem, layer, why)
    out.warnings = why
    return out


class _ConditionBootstrap:
    """Bootstrap of the across-conditions r of one correlation, layer by layer."""

    def __init__(self, s: _Setup, points: list[ConditionResult]) -> None:
        self.s = s
        self.points = points
        self.spec: BootstrapSpec = s.corr.bootstrap or BootstrapSpec()
        self.by_items = s.corr.resampling == "items"
        self.accuracy: FloatArray | None = None
        if self.by_items:
            # Accuracy of every result (reference first) on each resample of the queries.
            self.accuracy = self._resampled([_correct(r, s.inputs) for r in self._results()])

    def _results(self) -> list[ConditionResult]:
        return [self.s.reference, *self.points]

    def _resampled(self, per_result: Sequence[Statistic | FloatArray]) -> FloatArray:
        """[n_boot, results]: each result's statistic on the same resamples of the queries."""
        n = _n_queries(self.s)
        cols = [
            resample_statistics(
                n,
                stat if callable(stat) else mean_statistic(stat),
                n_boot=self.spec.n,
                seed=self.spec.seed,
            )
            for stat in per_result
        ]
        return np.stack(cols, axis=1)

    def interval(
        self, layer: int, keep: list[int], x: FloatArray, y: FloatArray
    ) -> tuple[tuple[_Ends, _Ends] | None, int | None, str | None]:
        """((pearson ends), (spearman ends)), resamples left out, or why there is none."""
        try:
            if self.by_items:
                boot = self._by_items(layer, keep)
            else:
                boot = (
                    _condition_resamples(x, y, "pearson", self.spec),
                    _condition_resamples(x, y, "spearman", self.spec),
                )
        except MetricError as exc:
            return None, None, exc.message
        return _ends(boot, self.spec, self.s.corr.max_undefined)

    def _by_items(self, layer: int, keep: list[int]) -> tuple[FloatArray, FloatArray]:
        if self.accuracy is None:
            raise MetricError("no resampled accuracy")
        # Only the points with a value at this layer, as in the point estimate.
        results = [self.s.reference, *(self.points[i] for i in keep)]
        m = self._resampled([_item_statistic(self.s, r, layer) for r in results])
        cols = [i + 1 for i in keep]  # column 0 of the accuracies is the reference
        dm = m[:, 1:] - m[:, :1]
        da = self.accuracy[:, cols] - self.accuracy[:, :1]
        return _rowwise(dm, da, "pearson"), _rowwise(dm, da, "spearman")


def _condition_resamples(
    x: FloatArray, y: FloatArray, method: str, spec: BootstrapSpec
) -> FloatArray:
    """r on resamples of the points; NaN where fewer than 3 distinct points were drawn."""

    def statistic(idx: npt.NDArray[np.int64]) -> FloatArray:
        r = _rowwise(x[idx], y[idx], method)
        distinct = (np.diff(np.sort(idx, axis=1), axis=1) != 0).sum(axis=1) + 1
        return np.where(distinct >= 3, r, np.nan)

    return resample_statistics(x.size, statistic, n_boot=spec.n, seed=spec.seed)


# --- across items ---------------------------------------------------------------------------


def _across_items(s: _Setup, point: ConditionResult) -> CorrelationResult:
    out = _empty_result(s, "items", points=[point.name], condition=point.name)
    why: list[str] = []
    try:
        dy = _correct(point, s.inputs) - _correct(s.reference, s.inputs)
    except MetricError as exc:
        out.warnings = [f"r undefined at every layer: {exc.message}"]
        return out
    spec = s.corr.bootstrap
    for j, layer in enumerate(s.layers):
        s.inputs.check_stop()
        dx = _item_values(s, point, layer) - _item_values(s, s.reference, layer)
        keep = np.isfinite(dx)
        x, y = dx[keep], dy[keep]
        r, reason = _point(x, y, "query")
        if not keep.any():
            reason = "no query has a value here (no attention at the embedding layer)"
        _fill(out, j, int(keep.sum()), r, reason, layer, why)
        if spec is not None and r is not None:
            boot = tuple(_query_resamples(x, y, m, spec) for m in _METHODS)
            ends, undefined, problem = _ends(boot, spec, s.corr.max_undefined)
            _fill_interval(out, j, ends, undefined, problem, layer, why)
    out.warnings = why
    return out


def _query_resamples(x: FloatArray, y: FloatArray, method: str, spec: BootstrapSpec) -> FloatArray:
    """r on resamples of the queries' (x, y) pairs (NaN where a side is constant)."""
    return resample_statistics(
        x.size, lambda idx: _rowwise(x[idx], y[idx], method), n_boot=spec.n, seed=spec.seed
    )


# --- per-query data -------------------------------------------------------------------------


def _acts(s: _Setup, result: ConditionResult) -> Activations:
    acts = (s.inputs.acts or {}).get(result.name)
    if acts is None:
        raise MetricError(
            f"correlation of {s.corr.metric!r}: the activations of {result.name!r} are needed "
            "to resample the queries",
            hint="use resample: conditions",
        )
    return acts


def _n_queries(s: _Setup) -> int:
    sizes = {r.n_items for r in [s.reference, *s.points]}
    if len(sizes) != 1:
        raise MetricError(f"the results analysed different numbers of queries: {sorted(sizes)}")
    return sizes.pop()


def _correct(result: ConditionResult, inputs: CorrelationInputs) -> FloatArray:
    """Per query: 1.0 when the most likely option is the gold one, else 0.0."""
    b = result.behaviour
    if b is None or inputs.gold is None or len(b.choices) != len(inputs.gold):
        raise MetricError(
            f"correlation: {result.name!r} has no per-query choices matching the queries' gold "
            "options"
        )
    return np.array([float(b.options[c] == g) for c, g in zip(b.choices, inputs.gold, strict=True)])


def _attention(s: _Setup, result: ConditionResult, layer: int) -> tuple[FloatArray, FloatArray]:
    """[n, heads or 1] masses on the relevant and irrelevant spans at a layer."""
    acts = _acts(s, result)
    metric = s.metric
    if acts.attention is None or not isinstance(metric, AttentionRatioMetric):
        raise MetricError(f"{result.name!r}: no attention masses were extracted")
    att = acts.attention[:, acts.layers.index(layer)].double().numpy()
    rel = att[..., acts.attention_spans.index(metric.relevant)]
    irr = att[..., acts.attention_spans.index(metric.irrelevant)]
    n = rel.shape[0]
    head = s.curve.get("head")
    if head is not None:
        if rel.ndim != 2 or not 0 <= int(head) < rel.shape[1]:
            raise MetricError(f"{result.name!r}: no attention head {head} was extracted")
        return rel[:, [int(head)]], irr[:, [int(head)]]
    return rel.reshape(n, -1), irr.reshape(n, -1)


def _item_values(s: _Setup, result: ConditionResult, layer: int) -> FloatArray:
    """Per query, the attention quantity of the selected curve (NaN where undefined)."""
    rel, irr = _attention(s, result, layer)
    metric = s.metric
    if not isinstance(metric, AttentionRatioMetric):
        raise MetricError("only the attention ratio has a value per query")
    stat = s.curve.get("stat", "ratio")
    if stat == "relevant":
        return rel.mean(axis=1)
    if stat == "irrelevant":
        return irr.mean(axis=1)
    num, den = rel.sum(axis=1), irr.sum(axis=1)  # NaN at the embedding layer stays NaN
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _item_statistic(s: _Setup, result: ConditionResult, layer: int) -> Statistic:
    """The curve's value recomputed on resamples of the queries (`resample_statistics`)."""
    metric = s.metric
    if isinstance(metric, AttentionRatioMetric):
        rel, irr = _attention(s, result, layer)
        stat = s.curve.get("stat", "ratio")
        if stat == "relevant":
            return mean_statistic(rel.mean(axis=1))
        if stat == "irrelevant":
            return mean_statistic(irr.mean(axis=1))
        return ratio_statistic(rel.sum(axis=1), irr.sum(axis=1))
    if isinstance(metric, RsaMetric):
        acts = _acts(s, result)
        x = acts.states[:, acts.layers.index(layer)].double().numpy()
        model = rdm(standardise(x) if metric.standardise else x, metric.rdm)
        return rdm_statistic(model, _hypothesis_rdm(s, x.shape[0]), metric.compare)
    raise MetricError("probe accuracy cannot be recomputed on resampled queries")


def _hypothesis_rdm(s: _Setup, n: int) -> FloatArray:
    metric = s.metric
    if not isinstance(metric, RsaMetric):
        raise MetricError("not an RSA correlation")
    title = s.curve.get("hypothesis")
    hyp = next(h for h in metric.hypotheses if h.title == title)
    data = LayerInput(x=torch.zeros(0), labels=dict(s.inputs.labels or {}), keep=np.arange(n))
    return RsaImpl._hypothesis(data, hyp, n)[0]  # the RDM the metric itself compares with


# --- shared pieces --------------------------------------------------------------------------

_METHODS = ("pearson", "spearman")
_Ends = tuple[float, float]


def _accuracy(result: ConditionResult) -> float | None:
    return None if result.behaviour is None else result.behaviour.accuracy


def _curve_values(result: ConditionResult, s: _Setup) -> list[float | None]:
    """The selected curve's value at each correlated layer (None: undefined or absent)."""
    for c in result.curves:
        if c.metric == s.corr.metric and c.params == s.curve:
            at = dict(zip(c.layers, c.values, strict=True))
            return [_finite(at.get(layer)) for layer in s.layers]
    return [None] * len(s.layers)


def _curve_label(s: _Setup) -> str:
    for r in [s.reference, *s.points]:
        for c in r.curves:
            if c.metric == s.corr.metric and c.params == s.curve:
                return c.label
    return f"{s.corr.metric} {s.curve}"


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _finite(v: float | None) -> float | None:
    return v if v is not None and np.isfinite(v) else None


def _point(x: FloatArray, y: FloatArray, what: str) -> tuple[_R | None, str | None]:
    """scipy's Pearson and Spearman r of the points, or why they are undefined."""
    if x.size < 3:
        return None, f"{x.size} {what} points with a value; a correlation needs at least 3"
    if np.ptp(x) == 0:
        return None, f"the metric's change is the same at every {what} point"
    if np.ptp(y) == 0:
        return None, f"the behavioural change is the same at every {what} point"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        p, sp = stats.pearsonr(x, y), stats.spearmanr(x, y)
    return _R(float(p.statistic), float(p.pvalue), float(sp.statistic), float(sp.pvalue)), None


def _rowwise(x: FloatArray, y: FloatArray, method: str) -> FloatArray:
    """Pearson (or Spearman: Pearson of average ranks) r of each row pair; NaN where a row is
    constant or not finite."""
    if method == "spearman":
        x, y = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    ok &= (np.ptp(np.where(ok[:, None], x, 0.0), axis=1) > 0) & (
        np.ptp(np.where(ok[:, None], y, 0.0), axis=1) > 0
    )
    out = np.full(x.shape[0], np.nan)
    if ok.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.NearConstantInputWarning)
            out[ok] = stats.pearsonr(x[ok], y[ok], axis=1).statistic
    return out


def _ends(
    boot: Sequence[FloatArray], spec: BootstrapSpec, max_undefined: float
) -> tuple[tuple[_Ends, _Ends] | None, int | None, str | None]:
    undefined = int(max(np.sum(~np.isfinite(b)) for b in boot))
    try:
        pair = tuple(
            percentile_interval(
                b,
                spec.confidence,
                max_undefined=max_undefined,
                what="r",
                hint="raise max_undefined, or add conditions or queries",
            )  # fmt: skip
            for b in boot
        )
    except MetricError as exc:
        return None, undefined, f"{exc.message} (max_undefined {max_undefined:g})"
    return (pair[0], pair[1]), undefined, None


def _empty_result(
    s: _Setup, across: Scope, *, points: list[str], condition: str | None = None
) -> CorrelationResult:
    n_layers = len(s.layers)
    metric_label = _curve_label(s)
    if across == "conditions":
        x, y = f"Δ {metric_label}", f"Δ {_BEHAVIOUR}"
        where = f"across conditions (Δ = condition − {s.reference.name!r})"
    else:
        x = f"Δ per-query {_item_label(s)}"
        y = f"Δ {_CORRECTNESS}"
        where = f"across queries ({condition!r} − {s.reference.name!r})"
    spec = s.corr.bootstrap
    out = CorrelationResult(
        metric=s.corr.metric, curve=s.curve, across=across,
        reference=s.reference.name, condition=condition, points=points,
        label=f"Pearson and Spearman r of {x} vs {y} {where}", x=x, y=y, layers=list(s.layers),
        n=[0] * n_layers, pearson=[None] * n_layers, pearson_p=[None] * n_layers,
        spearman=[None] * n_layers, spearman_p=[None] * n_layers,
    )  # fmt: skip
    if spec is not None:
        resampled = "queries" if across == "items" or s.corr.resampling == "items" else "points"
        both = ", both sides recomputed on each" if resampled == "queries" else ""
        out.ci = (
            f"{spec.confidence:.0%} percentile bootstrap, {spec.n} resamples of the "
            f"{resampled} (seed {spec.seed}){both}"
        )
        for name in ("pearson_ci_low", "pearson_ci_high", "spearman_ci_low", "spearman_ci_high"):
            setattr(out, name, [None] * n_layers)
        out.undefined_resamples = [None] * n_layers
    return out


def _item_label(s: _Setup) -> str:
    metric = s.metric
    if not isinstance(metric, AttentionRatioMetric):
        return s.corr.metric
    stat = s.curve.get("stat", "ratio")
    if stat in ("relevant", "irrelevant"):
        span = metric.relevant if stat == "relevant" else metric.irrelevant
        return f"attention mass on {span!r} from the last token (mean over heads)"
    heads = "heads summed" if "head" not in s.curve else f"head {s.curve['head']}"
    return (
        f"attention ratio {metric.relevant!r} / {metric.irrelevant!r} from the last token ({heads})"
    )


def _fill(
    out: CorrelationResult,
    j: int,
    n: int,
    r: _R | None,
    reason: str | None,
    layer: int,
    why: list[str],
) -> None:
    out.n[j] = n
    if r is None:
        why.append(f"layer {layer}: r undefined: {reason}")
        return
    out.pearson[j], out.pearson_p[j] = r.pearson, r.pearson_p
    out.spearman[j], out.spearman_p[j] = r.spearman, r.spearman_p


def _fill_interval(
    out: CorrelationResult,
    j: int,
    ends: tuple[_Ends, _Ends] | None,
    undefined: int | None,
    problem: str | None,
    layer: int,
    why: list[str],
) -> None:
    if out.undefined_resamples is not None:
        out.undefined_resamples[j] = undefined
    if ends is None:
        why.append(f"layer {layer}: no interval: {problem}")
        return
    (p_low, p_high), (s_low, s_high) = ends
    for column, value in (
        (out.pearson_ci_low, p_low),
        (out.pearson_ci_high, p_high),
        (out.spearman_ci_low, s_low),
        (out.spearman_ci_high, s_high),
    ):
        if column is not None:
            column[j] = value
