"""The metric stages of a job: per-condition layer curves and cross-condition comparisons.

`condition_results` computes every metric of the spec at every layer of each unit (one
`ConditionResult` per unit) and keeps each layer's kNN graph in the job's graph cache;
`comparison_results` then compares the units' final weights, reusing those graphs.
"""

from __future__ import annotations

import hashlib
import json

import torch

from reprlab.schemas.results import ComparisonResult, ConditionResult, LayerCurve
from reprlab.schemas.specs import ICLCondition, SFTCondition
from reprlab.worker.aggregate import Member, compare_conditions, comparison_graph_k
from reprlab.worker.errors import MetricError
from reprlab.worker.extract import Activations
from reprlab.worker.metrics import GraphSlot, MetricOutput, compute_layer_metrics, normalised_auc
from reprlab.worker.metrics.base import LabelValue
from reprlab.worker.pipeline_context import EXTRACT_SHARE, METRIC_SHARE, JobContext, timed_stage
from reprlab.worker.pipeline_units import Unit


def condition_results(
    ctx: JobContext, units: list[Unit], labels: dict[str, list[LabelValue]]
) -> list[ConditionResult]:
    results = []
    n = len(units)
    device = _metric_device(ctx.spec.model.device)
    graph_k = comparison_graph_k(ctx.spec.comparisons, [_member(u) for u in units])
    for i, unit in enumerate(units):
        ctx.check_stop()
        acts = unit.acts
        if acts is None:
            raise RuntimeError(f"unit {unit.name} has no activations")
        stage = f"metrics:{unit.name}"
        base = 0.05 + EXTRACT_SHARE + METRIC_SHARE * i / n
        ctx.reporter.progress(stage, base, f"{len(acts.layers)} layers")
        with timed_stage(ctx.reporter, stage) as rec:
            curves, dupes, warnings = _condition_curves(
                ctx, unit.name, acts, labels, device, graph_k.get(unit.name, 0)
            )
            rec.detail = f"{len(curves)} curves over {len(acts.layers)} layers"
            if warnings:
                rec.detail += f"; {len(warnings)} undefined values (see warnings)"
        cond = unit.condition
        results.append(
            ConditionResult(
                name=unit.name,
                group=cond.group,
                paradigm=cond.paradigm,
                n_items=acts.states.shape[0],
                layers=acts.layers,
                duplicates=dupes,
                curves=curves,
                activations_artifact=f"activations/{unit.name}.safetensors",
                prompt_tokens_mean=round(sum(acts.n_tokens) / max(len(acts.n_tokens), 1), 2),
                k=None
                if isinstance(cond, SFTCondition) and cond.train_on == "train"
                else cond.k_value,
                seed=cond.seed_value,
                selection=cond.selection if isinstance(cond, ICLCondition) else None,
                label_noise=cond.label_noise_value if isinstance(cond, ICLCondition) else None,
                demo_dataset=_demo_dataset(cond),
                demos=unit.demos,
                prompt_hashes=[_text_hash(p.text) for p in unit.prompts],
                tokens_read=[list(r) for r in acts.read],
                prompt_format=ctx.fmt.key(),
                prompts_artifact=f"prompts/{unit.name}.json",
                step=unit.step,
                trained_on=unit.trained_on,
                train_losses=unit.losses,
                adapter_artifact=(
                    f"adapters/{unit.name}.safetensors" if unit.step is not None else None
                ),
                behaviour=ctx.behaviour.get(unit.name),
                warnings=ctx.warnings.get(unit.name, []) + warnings,
            )
        )
    return results


def _demo_dataset(cond: ICLCondition | SFTCondition) -> str | None:
    """A short name of an ICL condition's other demonstration dataset (None: the job's)."""
    if not isinstance(cond, ICLCondition) or cond.demo_dataset is None:
        return None
    spec = cond.demo_dataset
    name = getattr(spec, "name", None) or getattr(spec, "path", None)
    return f"{spec.source}:{name}" if name else spec.source


def _text_hash(text: str) -> str:
    """The first 16 hex digits of the sha256 of a prompt's UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def comparison_results(
    ctx: JobContext, units: list[Unit]
) -> tuple[list[ComparisonResult], list[str]]:
    """The spec's cross-condition comparisons over the final weights of each condition."""
    if not ctx.spec.comparisons:
        return [], []
    members = [_member(u) for u in units]
    device = _metric_device(ctx.spec.model.device)
    out: list[ComparisonResult] = []
    warnings: list[str] = []
    with timed_stage(ctx.reporter, "comparisons") as rec:
        for comp in ctx.spec.comparisons:
            ctx.check_stop()
            results, why = compare_conditions(members, comp, device, ctx.graphs)
            out += results
            warnings += why
        rec.detail = f"{len(out)} comparison curves"
        if warnings:
            rec.detail += f"; {len(warnings)} undefined values (see warnings)"
    return out, warnings


def _member(unit: Unit) -> Member:
    """The unit as one side of a comparison."""
    if unit.acts is None:
        raise RuntimeError(f"unit {unit.name} has no activations")
    cond = unit.condition
    step = None if unit.name == cond.name else unit.step
    return Member(unit.name, cond.group, cond.swept, unit.acts.layers, unit.acts.states, step)


def _condition_curves(
    ctx: JobContext,
    name: str,
    acts: Activations,
    labels: dict[str, list[LabelValue]],
    device: torch.device,
    graph_k: int,
) -> tuple[list[LayerCurve], list[int], list[str]]:
    """Every metric at every layer, grouped into one curve per (metric, parameters).

    A metric a layer cannot support is null at that layer, with the reason in the warnings.
    Each layer's kNN graph is kept in the job's graph cache under (name, layer), with at
    least `graph_k` neighbours, for the comparisons.
    """
    per_curve: dict[tuple[str, str], list[MetricOutput | None]] = {}
    dupes: list[int] = []
    warnings: list[str] = []
    n_layers = len(acts.layers)
    attention = None if acts.attention is None else acts.attention.double().cpu().numpy()
    for j, layer in enumerate(acts.layers):
        ctx.check_stop()
        try:
            layer_metrics = compute_layer_metrics(
                acts.states[:, j, :],
                ctx.spec.metrics,
                labels=labels,
                attention=None if attention is None else attention[:, j],
                attention_spans=acts.attention_spans,
                device=device,
                graph_slot=GraphSlot(ctx.graphs, (name, layer), graph_k),
                duplicates=ctx.spec.duplicates,
            )
        except MetricError as exc:
            raise MetricError(f"{name}, layer {layer}: {exc.message}", exc.hint) from exc
        dupes.append(layer_metrics.n_duplicates)
        warnings += [f"layer {layer}: {m}: {why}" for m, why in layer_metrics.skipped.items()]
        warnings += [
            f"layer {layer}: {out.label}: {out.why}"
            for outputs in layer_metrics.outputs.values()
            for out in outputs
            if out.value is None and out.why is not None
        ]
        for metric, outputs in layer_metrics.outputs.items():
            for out in outputs:
                slot = per_curve.setdefault(
                    (metric, json.dumps(out.params, sort_keys=True)), [None] * n_layers
                )
                slot[j] = out
    curves = [_curve(metric, acts.layers, points) for (metric, _), points in per_curve.items()]
    computed = {metric for metric, _ in per_curve}
    warnings += [
        f"{spec.name}: undefined at every layer"
        for spec in ctx.spec.metrics
        if spec.name not in computed
    ]
    return curves, dupes, warnings


def _curve(metric: str, layers: list[int], points: list[MetricOutput | None]) -> LayerCurve:
    first = next(p for p in points if p is not None)
    values = [p.value if p is not None else None for p in points]
    errors = [p.error if p is not None else None for p in points]
    intervals = [p.interval if p is not None else None for p in points]
    curve = LayerCurve(
        metric=metric,
        label=first.label,
        params=first.params,
        layers=layers,
        values=values,
        errors=errors if any(e is not None for e in errors) else None,
    )
    if any(i is not None for i in intervals):
        curve.ci_low = [i[0] if i is not None else None for i in intervals]
        curve.ci_high = [i[1] if i is not None else None for i in intervals]
    if metric.startswith("id_"):
        curve.summary["auc"] = normalised_auc(layers, values)
    return curve


def _metric_device(spec_device: str) -> torch.device:
    if spec_device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec_device.startswith("cuda") or spec_device == "cpu":
        return torch.device(spec_device)
    return torch.device("cpu")
