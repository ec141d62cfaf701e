"""The stages of one job: data -> prompts -> activations -> metrics -> report.

Plain functions with explicit arguments: the Celery task and `reprlab run --local` both call
`run_pipeline`. Nothing here reads the environment or knows about Celery or HTTP.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from reprlab.schemas.jobs import StageRecord
from reprlab.schemas.results import (
    BehaviourResult,
    ConditionResult,
    JobResults,
    LayerCurve,
    ModelInfo,
)
from reprlab.schemas.specs import Condition, JobSpec
from reprlab.server.storage import ArtifactStore
from reprlab.worker import store as keys
from reprlab.worker.data import Dataset, load_dataset
from reprlab.worker.errors import JobCancelled
from reprlab.worker.evaluate import SCORING_VERSION, score_options
from reprlab.worker.extract import Activations, extract_activations
from reprlab.worker.metrics import MetricOutput, compute_layer_metrics, normalised_auc
from reprlab.worker.models import LoadedModel, ModelCache, ResolvedModel, resolve_model
from reprlab.worker.prompts import build_prompts, target_delimiter

# Share of the progress bar each phase takes; extraction dominates on real models.
_EXTRACT_SHARE = 0.75
_METRIC_SHARE = 0.2


class Reporter(Protocol):
    """Where a pipeline reports progress and asks whether to stop."""

    def progress(self, stage: str, fraction: float, message: str) -> None: ...

    def stage_done(self, record: StageRecord) -> None: ...

    def should_stop(self) -> bool: ...


class NullReporter:
    """A reporter that records stages and never stops (tests, library use)."""

    def __init__(self) -> None:
        self.stages: list[StageRecord] = []

    def progress(self, stage: str, fraction: float, message: str) -> None:
        return None

    def stage_done(self, record: StageRecord) -> None:
        self.stages.append(record)

    def should_stop(self) -> bool:
        return False


@dataclass
class _Context:
    spec: JobSpec
    store: ArtifactStore
    reporter: Reporter
    resolved: ResolvedModel
    models: ModelCache
    model_cache: Path
    model_roots: Sequence[Path]
    artifacts: dict[str, str] = field(default_factory=dict)
    behaviour: dict[str, BehaviourResult] = field(default_factory=dict)
    demos: dict[str, list[list[int]]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    _loaded: LoadedModel | None = None

    def model(self) -> LoadedModel:
        """The loaded model, loaded on first use (a fully cached job never loads it)."""
        if self._loaded is None:
            with _stage(self.reporter, "load-model") as rec:
                self._loaded = self.models.get(
                    self.spec.model, cache_dir=self.model_cache, allowed_roots=self.model_roots
                )
                rec.detail = f"{self._loaded.info.resolved} on {self._loaded.info.device}"
        return self._loaded

    def check_stop(self) -> None:
        if self.reporter.should_stop():
            raise JobCancelled()


@dataclass
class _StageResult:
    outcome: str = "done"
    detail: str = ""


@contextmanager
def _stage(reporter: Reporter, name: str) -> Iterator[_StageResult]:
    """Time a stage and record it in the job's stage log when it finishes."""
    rec = _StageResult()
    start = time.perf_counter()
    yield rec
    seconds = round(time.perf_counter() - start, 3)
    reporter.stage_done(
        StageRecord(name=name, outcome=rec.outcome, seconds=seconds, detail=rec.detail)
    )


@dataclass(frozen=True)
class PipelineOutput:
    """A finished pipeline: typed results and the store key of each named artifact."""

    results: JobResults
    artifact_keys: dict[str, str]


def run_pipeline(
    spec: JobSpec,
    *,
    store: ArtifactStore,
    model_cache: Path,
    reporter: Reporter,
    data_roots: Sequence[Path] = (),
    model_roots: Sequence[Path] = (),
    job_id: str = "local",
    models: ModelCache | None = None,
) -> PipelineOutput:
    """Run every stage of a job and return its results (also written to the store).

    Args:
        spec: The validated job spec.
        store: Artifact store for activations, plots and the results JSON.
        model_cache: Directory of converted built-in models.
        reporter: Receives progress and stage records; asked between batches whether to stop.
        data_roots: Directories JSONL datasets may be read from.
        model_roots: Directories local models may be loaded from.
        job_id: Names the per-job artifacts.
        models: A process-level model cache to reuse loaded models across jobs.

    Returns:
        The typed results (`results.artifacts` names what can be downloaded) and the store key
        of each artifact.

    Raises:
        ReprlabError: a subclass naming what to fix (SpecError, DataError, ModelLoadError, ...).
    """
    reporter.progress("data", 0.0, "building the dataset")
    with _stage(reporter, "data") as rec:
        dataset = load_dataset(spec.dataset, data_roots=data_roots)
        rec.detail = f"{dataset.name}: {len(dataset.eval)} queries, {len(dataset.train)} train"
    with _stage(reporter, "resolve-model") as rec:
        resolved = resolve_model(spec.model, cache_dir=model_cache, allowed_roots=model_roots)
        rec.detail = resolved.description
    ctx = _Context(
        spec=spec,
        store=store,
        reporter=reporter,
        resolved=resolved,
        models=models if models is not None else ModelCache(),
        model_cache=model_cache,
        model_roots=model_roots,
    )
    activations = _extract_all(ctx, dataset)
    conditions = _metrics_all(ctx, activations)
    info = _model_info(ctx)
    results = JobResults(job_id=job_id, model=info, conditions=conditions)
    _write_report(ctx, results, job_id)
    reporter.progress("done", 1.0, "finished")
    return PipelineOutput(results=results, artifact_keys=dict(ctx.artifacts))


def _extract_all(ctx: _Context, dataset: Dataset) -> dict[str, tuple[Activations, float]]:
    """Activations (and mean prompt length) per condition, reusing stored ones."""
    out: dict[str, tuple[Activations, float]] = {}
    conditions = _conditions(ctx.spec)
    n = len(conditions)
    for i, condition in enumerate(conditions):
        ctx.check_stop()
        base = 0.05 + _EXTRACT_SHARE * i / n
        ctx.reporter.progress(f"extract:{condition.name}", base, "building prompts")
        built = build_prompts(dataset, condition, ctx.spec.prompt)
        ctx.demos[condition.name] = [list(p.demos) for p in built]
        prompts = [p.text for p in built]
        acts = _extract_condition(ctx, prompts, condition, base, _EXTRACT_SHARE / n)
        out[condition.name] = (acts, sum(acts.n_tokens) / max(len(acts.n_tokens), 1))
        if ctx.spec.accuracy:
            _behaviour_condition(ctx, dataset, prompts, condition)
    return out


def _conditions(spec: JobSpec) -> list[Condition]:
    """The spec's conditions with every k-sweep expanded into one condition per k."""
    return [one for condition in spec.conditions for one in condition.expand()]


def _behaviour_condition(
    ctx: _Context, dataset: Dataset, prompts: list[str], condition: Condition
) -> None:
    """Accuracy of one condition, reused from the store when the same scoring was done."""
    stage = f"accuracy:{condition.name}"
    options = list(dataset.options)
    if not options:
        ctx.warnings.setdefault(condition.name, []).append(
            "accuracy: the dataset has no closed label set (more than 20 distinct outputs)"
        )
        return
    gold = [options.index(q.output) for q in dataset.eval]
    delimiter = target_delimiter(dataset, ctx.spec.prompt)
    key = "behaviour/" + keys.digest({
        "v": keys.KEY_VERSION, "scoring": SCORING_VERSION, "model": ctx.resolved.fingerprint,
        "dtype": ctx.spec.model.dtype,
        "prompts": keys.prompts_digest(prompts), "options": options, "delimiter": delimiter,
        "gold": gold,
    }) + ".json"  # fmt: skip
    with _stage(ctx.reporter, stage) as rec:
        if ctx.store.exists(key):
            result = BehaviourResult.model_validate_json(ctx.store.get_bytes(key))
            rec.outcome, rec.detail = "cached", f"reused {key}"
        else:
            loaded = ctx.model()

            def on_batch(done: int, total: int) -> None:
                ctx.reporter.progress(stage, 0.05 + _EXTRACT_SHARE, f"{done}/{total} options")

            scores = score_options(
                loaded.model, loaded.tokenizer, prompts, gold, options, delimiter,
                batch_size=ctx.spec.extraction.batch_size, progress=on_batch,
                should_stop=ctx.reporter.should_stop,
            )  # fmt: skip
            result = BehaviourResult(
                accuracy=scores.accuracy, accuracy_norm=scores.accuracy_norm,
                first_token_accuracy=scores.first_token_accuracy, n_items=scores.n_items,
                options=scores.options, choices=scores.choices,
            )  # fmt: skip
            ctx.store.put_bytes(key, result.model_dump_json().encode())
            rec.detail = f"accuracy {result.accuracy:.3f} over {result.n_items} items"
    ctx.behaviour[condition.name] = result


def _extract_condition(
    ctx: _Context, prompts: list[str], condition: Condition, base: float, share: float
) -> Activations:
    extraction = ctx.spec.extraction.model_dump(exclude={"batch_size"})
    key = keys.activations_key(
        model_fingerprint=ctx.resolved.fingerprint,
        dtype=ctx.spec.model.dtype,
        prompts_sha=keys.prompts_digest(prompts),
        extraction=extraction,
    )
    ctx.artifacts[f"activations/{condition.name}.safetensors"] = key
    stage = f"extract:{condition.name}"
    with _stage(ctx.reporter, stage) as rec:
        if ctx.store.exists(key):
            rec.outcome, rec.detail = "cached", f"reused {key}"
            return Activations.from_safetensors(ctx.store.get_bytes(key))
        loaded = ctx.model()

        def on_batch(done: int, total: int) -> None:
            msg = f"{done}/{total} prompts"
            ctx.reporter.progress(stage, base + share * done / max(total, 1), msg)

        acts = extract_activations(
            loaded.model,
            loaded.tokenizer,
            prompts,
            ctx.spec.extraction,
            progress=on_batch,
            should_stop=ctx.reporter.should_stop,
        )
        meta = {"condition": condition.name, "model": ctx.resolved.fingerprint}
        ctx.store.put_bytes(key, acts.to_safetensors(meta))
        rec.detail = f"{len(prompts)} prompts x {len(acts.layers)} layers -> {key}"
    return acts


def _metrics_all(
    ctx: _Context, activations: dict[str, tuple[Activations, float]]
) -> list[ConditionResult]:
    results = []
    conditions = _conditions(ctx.spec)
    n = len(conditions)
    device = _metric_device(ctx.spec.model.device)
    for i, condition in enumerate(conditions):
        ctx.check_stop()
        acts, mean_tokens = activations[condition.name]
        stage = f"metrics:{condition.name}"
        base = 0.05 + _EXTRACT_SHARE + _METRIC_SHARE * i / n
        ctx.reporter.progress(stage, base, f"{len(acts.layers)} layers")
        with _stage(ctx.reporter, stage) as rec:
            curves, dupes, warnings = _condition_curves(ctx, acts, device)
            rec.detail = f"{len(curves)} curves over {len(acts.layers)} layers"
            if warnings:
                rec.detail += f"; {len(warnings)} undefined values (see warnings)"
        results.append(
            ConditionResult(
                name=condition.name,
                paradigm=condition.paradigm,
                n_items=acts.states.shape[0],
                layers=acts.layers,
                duplicates=dupes,
                curves=curves,
                activations_artifact=f"activations/{condition.name}.safetensors",
                prompt_tokens_mean=round(mean_tokens, 2),
                k=condition.k_value,
                selection=condition.selection,
                demos=ctx.demos.get(condition.name, []),
                behaviour=ctx.behaviour.get(condition.name),
                warnings=ctx.warnings.get(condition.name, []) + warnings,
            )
        )
    return results


def _condition_curves(
    ctx: _Context, acts: Activations, device: torch.device
) -> tuple[list[LayerCurve], list[int], list[str]]:
    """Every metric at every layer, grouped into one curve per (metric, parameters).

    A metric a layer cannot support is null at that layer, with the reason in the warnings.
    """
    per_curve: dict[tuple[str, str], list[MetricOutput | None]] = {}
    dupes: list[int] = []
    warnings: list[str] = []
    n_layers = len(acts.layers)
    for j, layer in enumerate(acts.layers):
        ctx.check_stop()
        layer_metrics = compute_layer_metrics(acts.states[:, j, :], ctx.spec.metrics, device=device)
        dupes.append(layer_metrics.n_duplicates)
        warnings += [f"layer {layer}: {m}: {why}" for m, why in layer_metrics.skipped.items()]
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
    curve = LayerCurve(
        metric=metric,
        label=first.label,
        params=first.params,
        layers=layers,
        values=values,
        errors=errors if any(e is not None for e in errors) else None,
    )
    if metric.startswith("id_"):
        curve.summary["auc"] = normalised_auc(layers, values)
    return curve


def _metric_device(spec_device: str) -> torch.device:
    if spec_device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec_device.startswith("cuda") or spec_device == "cpu":
        return torch.device(spec_device)
    return torch.device("cpu")


def _model_info(ctx: _Context) -> ModelInfo:
    if ctx._loaded is not None:
        return ctx._loaded.info
    return ctx.resolved.info(ctx.spec.model)


def _write_report(ctx: _Context, results: JobResults, job_id: str) -> None:
    """Store a plot per metric and the results JSON under the job's keys."""
    ctx.reporter.progress("report", 0.97, "plots and results")
    with _stage(ctx.reporter, "report") as rec:
        metrics = sorted({c.metric for cond in results.conditions for c in cond.curves})
        for metric in metrics:
            name = f"plots/{metric}.png"
            key = keys.job_key(job_id, name)
            ctx.store.put_bytes(key, _render_plot(results, metric))
            ctx.artifacts[name] = key
        key = keys.job_key(job_id, "results.json")
        ctx.artifacts["results.json"] = key
        results.artifacts = sorted(ctx.artifacts)
        ctx.store.put_bytes(key, results.model_dump_json(indent=1).encode())
        rec.detail = f"{len(metrics)} plots"


def _render_plot(results: JobResults, metric: str) -> bytes:
    from reprlab.client.plots import plot_metric

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        plot_metric(results, metric, path)
        return path.read_bytes()
