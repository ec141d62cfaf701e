"""The stages of one job: data -> prompts -> activations -> metrics -> report.

Plain functions with explicit arguments: the Celery task and `reprlab run --local` both call
`run_pipeline`. Nothing here reads the environment or knows about Celery or HTTP.

This module holds the entry (`run_pipeline`, `PipelineOutput`) and the checks made before any
model work (label fields, layer limit); the stages live in `pipeline_context` (reporters, the
job's context, stage timing), `pipeline_units` (fine-tuning, activations and accuracy of every
analysed unit), `pipeline_metrics` (per-condition curves, comparisons) and `pipeline_report`
(plots, results JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reprlab.schemas.metrics import metric_label_fields
from reprlab.schemas.results import JobResults
from reprlab.schemas.specs import ICLCondition, JobSpec
from reprlab.server.storage import ArtifactStore
from reprlab.worker.aggregate import seed_aggregates
from reprlab.worker.correlate import check_correlation_layers, correlation_results
from reprlab.worker.data import Dataset, load_dataset
from reprlab.worker.demos import read_demos_file
from reprlab.worker.errors import SpecError
from reprlab.worker.extract import resolve_layers
from reprlab.worker.metrics import GraphCache
from reprlab.worker.metrics.base import LabelValue
from reprlab.worker.metrics.graphs import DEFAULT_BUDGET_BYTES
from reprlab.worker.models import ModelCache, ResolvedModel, resolve_model
from reprlab.worker.pipeline_context import JobContext, NullReporter, Reporter, timed_stage
from reprlab.worker.pipeline_metrics import comparison_results, condition_results
from reprlab.worker.pipeline_report import write_report
from reprlab.worker.pipeline_units import extract_units
from reprlab.worker.prompts import prompt_format

__all__ = ["NullReporter", "PipelineOutput", "Reporter", "run_pipeline"]


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
    hub_downloads: bool = False,
) -> PipelineOutput:
    """Run every stage of a job and return its results (also written to the store).

    Args:
        spec: The validated job spec.
        store: Artifact store for activations, plots and the results JSON.
        model_cache: Directory of converted built-in models.
        reporter: Receives progress and stage records; asked between batches whether to stop.
        data_roots: Directories dataset files may be read from.
        model_roots: Directories local models may be loaded from.
        job_id: Names the per-job artifacts.
        models: A process-level model cache to reuse loaded models across jobs.
        max_layers: The most layers a job may extract (the server's limit), checked against
            the model's depth before any model work; None: no limit.
        graph_cache_bytes: Memory for kNN graphs kept between the per-layer metrics and the
            comparisons (`GraphCache`); a graph that does not fit is computed again.
        hub_downloads: Let a Hugging Face dataset (`source: hf`) be downloaded from the hub;
            else only the worker's HF cache is read.

    Returns:
        The typed results (`results.artifacts` names what can be downloaded) and the store key
        of each artifact.

    Raises:
        ReprlabError: a subclass naming what to fix (SpecError, DataError, ModelLoadError, ...).
    """
    reporter.progress("data", 0.0, "building the dataset")
    with timed_stage(reporter, "data") as rec:
        dataset = load_dataset(spec.dataset, data_roots=data_roots, store=store,
                               hub_downloads=hub_downloads)  # fmt: skip
        rec.detail = f"{dataset.name}: {len(dataset.eval)} queries, {len(dataset.train)} train"
        labels = _label_table(dataset, spec)  # a missing label field fails before model work
        pools, given = _demonstrations(spec, data_roots, store, hub_downloads)
    with timed_stage(reporter, "resolve-model") as rec:
        resolved = resolve_model(spec.model, cache_dir=model_cache, allowed_roots=model_roots)
        rec.detail = resolved.description
        if max_layers is not None:
            _check_layer_limit(spec, resolved, max_layers)
        check_correlation_layers(spec, resolved.info(spec.model).n_layers)
    ctx = JobContext(
        spec=spec,
        store=store,
        reporter=reporter,
        resolved=resolved,
        models=models if models is not None else ModelCache(),
        model_cache=model_cache,
        model_roots=model_roots,
        fmt=prompt_format(dataset, spec.prompt),
        graphs=GraphCache(graph_cache_bytes),
        pools=pools,
        given=given,
    )
    units = extract_units(ctx, dataset)
    conditions = condition_results(ctx, units, labels)
    comparisons, warnings = comparison_results(ctx, units)
    correlations = correlation_results(ctx, conditions, units, dataset, labels)
    info = ctx.model_info()
    results = JobResults(
        job_id=job_id,
        model=info,
        conditions=conditions,
        aggregates=seed_aggregates(conditions),
        comparisons=comparisons,
        correlations=correlations,
        warnings=warnings,
    )
    write_report(ctx, results, job_id)
    reporter.progress("done", 1.0, "finished")
    return PipelineOutput(results=results, artifact_keys=dict(ctx.artifacts))


def _demonstrations(
    spec: JobSpec, data_roots: Sequence[Path], store: ArtifactStore, hub_downloads: bool
) -> tuple[dict[str, Dataset], dict[str, list[list[int]]]]:
    """Per ICL condition: the pool of its `demo_dataset`, and its given draws (read here, so
    a bad file fails before any model work)."""
    pools: dict[str, Dataset] = {}
    given: dict[str, list[list[int]]] = {}
    for cond in spec.conditions:
        if not isinstance(cond, ICLCondition):
            continue
        if cond.demo_dataset is not None:
            pools[cond.name] = load_dataset(cond.demo_dataset, data_roots=data_roots,
                                            store=store, hub_downloads=hub_downloads)  # fmt: skip
        if cond.demos is not None:
            given[cond.name] = cond.demos
        elif cond.demos_file is not None:
            given[cond.name] = read_demos_file(cond.demos_file, data_roots, cond.name)
    return pools, given


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
