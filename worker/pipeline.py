"""The stages of one job: data -> prompts -> activations -> metrics -> report.

Plain functions with explicit arguments: the Celery task and `reprlab run --local` both call
`run_pipeline`. Nothing here reads the environment or knows about Celery or HTTP.
"""

from __future__ import annotations

import functools
import gc
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load as st_load

from reprlab.schemas.jobs import StageRecord
from reprlab.schemas.metrics import metric_label_fields
from reprlab.schemas.results import (
    BehaviourResult,
    ComparisonResult,
    ConditionResult,
    JobResults,
    LayerCurve,
    ModelInfo,
)
from reprlab.schemas.specs import ConcreteCondition, ICLCondition, JobSpec, SFTCondition
from reprlab.server.storage import ArtifactStore
from reprlab.worker import store as keys
from reprlab.worker.aggregate import (
    Member,
    compare_conditions,
    comparison_graph_k,
    seed_aggregates,
)
from reprlab.worker.data import Dataset, load_dataset
from reprlab.worker.errors import JobCancelled, MetricError, SpecError
from reprlab.worker.evaluate import SCORING_VERSION, score_options
from reprlab.worker.extract import Activations, extract_activations, resolve_layers
from reprlab.worker.finetune import (
    TRAINING_VERSION,
    Trainee,
    checkpoint_metadata,
    make_trainee,
    tokenize_training,
    total_steps,
    train,
)
from reprlab.worker.metrics import (
    GraphCache,
    GraphSlot,
    MetricOutput,
    compute_layer_metrics,
    normalised_auc,
)
from reprlab.worker.metrics.base import LabelValue
from reprlab.worker.metrics.graphs import DEFAULT_BUDGET_BYTES
from reprlab.worker.models import (
    LoadedModel,
    ModelCache,
    ResolvedModel,
    load_model,
    resolve_model,
)
from reprlab.worker.prompts import (
    Prompt,
    build_prompts,
    fixed_demos,
    target_delimiter,
    training_texts,
)

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
    graphs: GraphCache = field(default_factory=GraphCache)
    artifacts: dict[str, str] = field(default_factory=dict)
    behaviour: dict[str, BehaviourResult] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    _loaded: LoadedModel | None = None
    _trainee: tuple[str, Trainee] | None = None
    _trainee_weights: str | None = None

    def model(self) -> LoadedModel:
        """The loaded model, loaded on first use (a fully cached job never loads it)."""
        if self._loaded is None:
            self._drop_trainee()
            with _stage(self.reporter, "load-model") as rec:
                self._loaded = self.models.get(
                    self.spec.model, cache_dir=self.model_cache, allowed_roots=self.model_roots
                )
                rec.detail = f"{self._loaded.info.resolved} on {self._loaded.info.device}"
        return self._loaded

    def trainee(self, cond: SFTCondition, recipe_key: str, *, for_training: bool) -> Trainee:
        """A private copy of the model wrapped for `cond` (one held at a time)."""
        held = self._trainee
        if held is not None and held[0] == recipe_key:
            if not for_training or held[1].optimizer is not None:
                return held[1]
        # One model in memory at a time: drop the shared base model and any other trainee.
        self._drop_trainee()
        if self._loaded is not None:
            self._loaded = None
            self.models.clear()
        with _stage(self.reporter, f"load-model:{cond.name}") as rec:
            trainee = make_trainee(
                load_model(self.resolved, self.spec.model), cond, for_training=for_training
            )
            rec.detail = f"private copy for {cond.method} fine-tuning"
        self._trainee = (recipe_key, trainee)
        return trainee

    def _drop_trainee(self) -> None:
        if self._trainee is not None:
            was_cuda = self._trainee[1].loaded.info.device.startswith("cuda")
            self._trainee = self._trainee_weights = None
            gc.collect()
            if was_cuda:
                torch.cuda.empty_cache()

    def tuned(self, cond: SFTCondition, recipe_key: str, checkpoint: str) -> LoadedModel:
        """The model of `cond` with the weights of a stored checkpoint."""
        trainee = self.trainee(cond, recipe_key, for_training=False)
        if self._trainee_weights != checkpoint:
            trainee.load_trainable(st_load(self.store.get_bytes(checkpoint)))
            self._trainee_weights = checkpoint
        return trainee.loaded

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
    max_layers: int | None = None,
    graph_cache_bytes: int = DEFAULT_BUDGET_BYTES,
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
        max_layers: The most layers a job may extract (the server's limit), checked against
            the model's depth before any model work; None: no limit.
        graph_cache_bytes: Memory for kNN graphs kept between the per-layer metrics and the
            comparisons (`GraphCache`); a graph that does not fit is computed again.

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
        labels = _label_table(dataset, spec)  # a missing label field fails before model work
    with _stage(reporter, "resolve-model") as rec:
        resolved = resolve_model(spec.model, cache_dir=model_cache, allowed_roots=model_roots)
        rec.detail = resolved.description
        if max_layers is not None:
            _check_layer_limit(spec, resolved, max_layers)
    ctx = _Context(
        spec=spec,
        store=store,
        reporter=reporter,
        resolved=resolved,
        models=models if models is not None else ModelCache(),
        model_cache=model_cache,
        model_roots=model_roots,
        graphs=GraphCache(graph_cache_bytes),
    )
    units = _extract_all(ctx, dataset)
    conditions = _metrics_all(ctx, units, labels)
    comparisons, warnings = _comparisons(ctx, units)
    info = _model_info(ctx)
    results = JobResults(
        job_id=job_id,
        model=info,
        conditions=conditions,
        aggregates=seed_aggregates(conditions),
        comparisons=comparisons,
        warnings=warnings,
    )
    _write_report(ctx, results, job_id)
    reporter.progress("done", 1.0, "finished")
    return PipelineOutput(results=results, artifact_keys=dict(ctx.artifacts))


@dataclass
class _Unit:
    """One analysed point: a concrete condition at one set of weights (one result)."""

    name: str
    condition: ConcreteCondition
    prompts: list[Prompt]
    demos: list[list[int]]
    model_fp: str
    model: Callable[[], LoadedModel]
    step: int | None = None
    losses: list[float] | None = None
    trained_on: list[int] | None = None
    acts: Activations | None = None


def _conditions(spec: JobSpec) -> list[ConcreteCondition]:
    """The spec's conditions with every k-sweep and seed list expanded."""
    return [one for condition in spec.conditions for one in condition.expand()]


def _extract_all(ctx: _Context, dataset: Dataset) -> list[_Unit]:
    """Every analysed point with its activations (and accuracy), reusing stored work."""
    units: list[_Unit] = []
    conditions = _conditions(ctx.spec)
    n = len(conditions)
    for i, condition in enumerate(conditions):
        ctx.check_stop()
        base = 0.05 + _EXTRACT_SHARE * i / n
        share = _EXTRACT_SHARE / n
        if isinstance(condition, SFTCondition):
            points = _train(ctx, dataset, condition, base, share / 2)
            base, share = base + share / 2, share / 2
        else:
            built = build_prompts(dataset, condition, ctx.spec.prompt)
            points = [
                _Unit(
                    name=condition.name, condition=condition, prompts=built,
                    demos=[list(p.demos) for p in built], model_fp=ctx.resolved.fingerprint,
                    model=ctx.model,
                )
            ]  # fmt: skip
        for j, unit in enumerate(points):
            ctx.check_stop()
            start, part = base + share * j / len(points), share / len(points)
            if ctx.spec.accuracy:  # scoring costs about what the extraction does
                part /= 2
                unit.acts = _extract_unit(ctx, unit, start, part)
                _behaviour_unit(ctx, dataset, unit, start + part, part)
            else:
                unit.acts = _extract_unit(ctx, unit, start, part)
        units += points
    return units


def _train(
    ctx: _Context, dataset: Dataset, cond: SFTCondition, base: float, share: float
) -> list[_Unit]:
    """Fine-tune (or find the stored checkpoints of) one SFT condition; one unit per step."""
    if cond.train_on == "train":
        indices: Sequence[int] = range(len(dataset.train))
    else:
        indices = fixed_demos(dataset, cond.k_value, cond.seed_value)
    pairs = training_texts(dataset, indices, ctx.spec.prompt)
    total = total_steps(len(pairs), cond)
    late = [s for s in cond.checkpoints if s > total]
    if late:
        raise SpecError(
            f"condition '{cond.name}' asks for checkpoint step {late[0]} but trains for "
            f"{total} steps ({len(pairs)} items, batch {cond.batch_size})",
            hint="list steps up to the total, or raise epochs/steps",
        )
    recipe_key = keys.digest({
        "v": keys.KEY_VERSION, "training": TRAINING_VERSION, "model": ctx.resolved.fingerprint,
        "dtype": ctx.spec.model.dtype, "texts": keys.digest(pairs),
        "recipe": cond.training_recipe(), "total": total,
    })  # fmt: skip
    steps = sorted({*cond.checkpoints, total})

    def ckpt_key(step: int) -> str:
        return f"adapters/{recipe_key}/step-{step}.safetensors"

    stage = f"train:{cond.name}"
    missing = [s for s in steps if not ctx.store.exists(ckpt_key(s))]
    with _stage(ctx.reporter, stage) as rec:
        if not missing:
            rec.outcome, rec.detail = "cached", f"reused {len(steps)} checkpoints of {recipe_key}"
        else:
            rec.detail = _run_training(ctx, cond, pairs, total, steps, missing, recipe_key,
                                       ckpt_key, stage, base, share)  # fmt: skip
    with ctx.store.open(ckpt_key(total)) as handle:
        final = checkpoint_metadata(handle)
    losses: list[float] = json.loads(final.get("losses", "[]"))
    zero_shot = ICLCondition(name=cond.name, k=0)
    prompts = build_prompts(dataset, zero_shot, ctx.spec.prompt)
    units = []
    for step in steps:
        name = cond.name if step == total else f"{cond.name}.step{step}"
        ctx.artifacts[f"adapters/{name}.safetensors"] = ckpt_key(step)
        units.append(
            _Unit(
                name=name, condition=cond, prompts=prompts, demos=[],
                trained_on=list(indices) if cond.train_on == "demos" else None,
                model_fp=keys.digest([ctx.resolved.fingerprint, ckpt_key(step)]),
                model=functools.partial(ctx.tuned, cond, recipe_key, ckpt_key(step)),
                step=step, losses=losses[:step],
            )
        )  # fmt: skip
    return units


def _run_training(
    ctx: _Context,
    cond: SFTCondition,
    pairs: list[tuple[str, str]],
    total: int,
    steps: list[int],
    missing: list[int],
    recipe_key: str,
    ckpt_key: Callable[[int], str],
    stage: str,
    base: float,
    share: float,
) -> str:
    """Train from scratch or from the latest stored state; store every missing checkpoint."""
    trainee = ctx.trainee(cond, recipe_key, for_training=True)
    data = tokenize_training(
        trainee.loaded.tokenizer, pairs, loss=cond.loss, max_length=cond.max_length
    )
    state_key = f"train-state/{recipe_key}.safetensors"
    start = 0
    if ctx.store.exists(state_key):
        blob = ctx.store.get_bytes(state_key)
        if int(checkpoint_metadata(blob)["step"]) <= missing[0]:
            start = trainee.load_state(blob)
    meta = {"recipe": recipe_key, "condition": cond.name, "model": ctx.resolved.fingerprint}
    if start == 0 and 0 in missing:
        ctx.store.put_bytes(ckpt_key(0), trainee.checkpoint_bytes(0, meta))

    def save(done: int) -> None:
        if done in steps:
            ctx.store.put_bytes(ckpt_key(done), trainee.checkpoint_bytes(done, meta))
        if done < total:
            ctx.store.put_bytes(state_key, trainee.state_bytes(done))

    def on_step(done: int, of: int, loss: float) -> None:
        msg = f"step {done}/{of}, loss {loss:.4f}"
        ctx.reporter.progress(stage, base + share * done / max(of, 1), msg)

    train(
        trainee, data, start=start, total=total,
        save_at=lambda done: done in steps or done % cond.save_every == 0, on_save=save,
        progress=on_step, should_stop=ctx.reporter.should_stop,
    )  # fmt: skip
    resumed = f"resumed at step {start}; " if start else ""
    first, last = trainee.losses[0], trainee.losses[-1]
    return f"{resumed}{total} steps on {len(pairs)} items; loss {first:.4f} -> {last:.4f}"


def _behaviour_unit(
    ctx: _Context, dataset: Dataset, unit: _Unit, base: float, share: float
) -> None:
    """Accuracy of one unit, reused from the store when the same scoring was done."""
    stage = f"accuracy:{unit.name}"
    options = list(dataset.options)
    if not options:
        ctx.warnings.setdefault(unit.name, []).append(
            "accuracy: the dataset has no closed label set (more than 20 distinct outputs)"
        )
        return
    gold = [options.index(q.output) for q in dataset.eval]
    delimiter = target_delimiter(dataset, ctx.spec.prompt)
    key = "behaviour/" + keys.digest({
        "v": keys.KEY_VERSION, "scoring": SCORING_VERSION, "model": unit.model_fp,
        "dtype": ctx.spec.model.dtype,
        "prompts": keys.prompts_digest(unit.prompts), "options": options, "delimiter": delimiter,
        "gold": gold,
    }) + ".json"  # fmt: skip
    with _stage(ctx.reporter, stage) as rec:
        if ctx.store.exists(key):
            result = BehaviourResult.model_validate_json(ctx.store.get_bytes(key))
            rec.outcome, rec.detail = "cached", f"reused {key}"
        else:
            loaded = unit.model()

            def on_batch(done: int, total: int) -> None:
                msg = f"{done}/{total} prompt-option pairs"
                ctx.reporter.progress(stage, base + share * done / max(total, 1), msg)

            scores = score_options(
                loaded.model, loaded.tokenizer, [p.text for p in unit.prompts], gold, options,
                delimiter,
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
    ctx.behaviour[unit.name] = result


def _extract_unit(ctx: _Context, unit: _Unit, base: float, share: float) -> Activations:
    extraction = ctx.spec.extraction.model_dump(exclude={"batch_size"})
    key = keys.activations_key(
        model_fingerprint=unit.model_fp,
        dtype=ctx.spec.model.dtype,
        prompts_sha=keys.prompts_digest(unit.prompts),
        extraction=extraction,
    )
    ctx.artifacts[f"activations/{unit.name}.safetensors"] = key
    stage = f"extract:{unit.name}"
    with _stage(ctx.reporter, stage) as rec:
        if ctx.store.exists(key):
            rec.outcome, rec.detail = "cached", f"reused {key}"
            return Activations.from_safetensors(ctx.store.get_bytes(key))
        loaded = unit.model()

        def on_batch(done: int, total: int) -> None:
            msg = f"{done}/{total} prompts"
            ctx.reporter.progress(stage, base + share * done / max(total, 1), msg)

        acts = extract_activations(
            loaded.model,
            loaded.tokenizer,
            unit.prompts,
            ctx.spec.extraction,
            progress=on_batch,
            should_stop=ctx.reporter.should_stop,
        )
        meta = {"condition": unit.name, "model": unit.model_fp}
        ctx.store.put_bytes(key, acts.to_safetensors(meta))
        rec.detail = f"{len(unit.prompts)} prompts x {len(acts.layers)} layers -> {key}"
    return acts


def _check_layer_limit(spec: JobSpec, resolved: ResolvedModel, max_layers: int) -> None:
    """SpecError if the spec's layers of this model (e.g. 'all') are more than `max_layers`."""
    n_blocks = resolved.info(spec.model).n_layers
    if n_blocks < 1:
        return  # a config without num_hidden_layers: extraction finds the depth itself
    wanted = len(resolve_layers(spec.extraction.layers, n_blocks))
    if wanted > max_layers:
        raise SpecError(
            f"extraction.layers {spec.extraction.layers!r} is {wanted} layers of "
            f"{resolved.description}; this server allows at most max_layers = {max_layers}",
            hint=f"list at most {max_layers} layer indices in extraction.layers",
        )


def _label_table(dataset: Dataset, spec: JobSpec) -> dict[str, list[LabelValue]]:
    """Label fields every query carries -> one value per query; a named absent field is an error."""
    fields: set[str] = set.intersection(*(set(ex.labels) for ex in dataset.eval))
    asked = {name for m in spec.metrics for name in metric_label_fields(m)}
    missing = sorted(asked - fields)
    if missing:
        known = ", ".join(sorted(fields)) or "none"
        raise SpecError(
            f"metrics name label fields the queries do not all carry: {', '.join(missing)}; "
            f"every query has: {known}",
            hint="name label fields of your data, or add them to every item's 'labels'",
        )
    return {name: [ex.labels[name] for ex in dataset.eval] for name in sorted(fields)}


def _metrics_all(
    ctx: _Context, units: list[_Unit], labels: dict[str, list[LabelValue]]
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
        base = 0.05 + _EXTRACT_SHARE + _METRIC_SHARE * i / n
        ctx.reporter.progress(stage, base, f"{len(acts.layers)} layers")
        with _stage(ctx.reporter, stage) as rec:
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
                demos=unit.demos,
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


def _comparisons(ctx: _Context, units: list[_Unit]) -> tuple[list[ComparisonResult], list[str]]:
    """The spec's cross-condition comparisons over the final weights of each condition."""
    if not ctx.spec.comparisons:
        return [], []
    members = [_member(u) for u in units]
    device = _metric_device(ctx.spec.model.device)
    out: list[ComparisonResult] = []
    warnings: list[str] = []
    with _stage(ctx.reporter, "comparisons") as rec:
        for comp in ctx.spec.comparisons:
            ctx.check_stop()
            results, why = compare_conditions(members, comp, device, ctx.graphs)
            out += results
            warnings += why
        rec.detail = f"{len(out)} comparison curves"
        if warnings:
            rec.detail += f"; {len(warnings)} undefined values (see warnings)"
    return out, warnings


def _member(unit: _Unit) -> Member:
    """The unit as one side of a comparison."""
    if unit.acts is None:
        raise RuntimeError(f"unit {unit.name} has no activations")
    cond = unit.condition
    step = None if unit.name == cond.name else unit.step
    return Member(unit.name, cond.group, cond.swept, unit.acts.layers, unit.acts.states, step)


def _condition_curves(
    ctx: _Context,
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
        if results.comparisons:
            key = keys.job_key(job_id, "plots/comparisons.png")
            ctx.store.put_bytes(key, _render_plot(results, None))
            ctx.artifacts["plots/comparisons.png"] = key
        key = keys.job_key(job_id, "results.json")
        ctx.artifacts["results.json"] = key
        results.artifacts = sorted(ctx.artifacts)
        ctx.store.put_bytes(key, results.model_dump_json(indent=1).encode())
        rec.detail = f"{len(metrics) + bool(results.comparisons)} plots"


def _render_plot(results: JobResults, metric: str | None) -> bytes:
    """PNG of one metric's curves, or of the comparisons when `metric` is None."""
    from reprlab.client.plots import plot_comparisons, plot_metric

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        if metric is None:
            plot_comparisons(results, path)
        else:
            plot_metric(results, metric, path)
        return path.read_bytes()
