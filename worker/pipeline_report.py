"""The report stage of a job: a plot per metric, one of the comparisons, and the results JSON.

Everything is stored under the job's keys (`store.job_key`) and named in `ctx.artifacts`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from reprlab.schemas.results import JobResults
from reprlab.worker import store as keys
from reprlab.worker.pipeline_context import JobContext, timed_stage


def write_report(ctx: JobContext, results: JobResults, job_id: str) -> None:
    """Store a plot per metric and the results JSON under the job's keys."""
    ctx.reporter.progress("report", 0.97, "plots and results")
    with timed_stage(ctx.reporter, "report") as rec:
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
