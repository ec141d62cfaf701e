"""Submit a job through the Python SDK, follow it, print and plot the results.

By default the job is the `icl-vs-sft` recipe (`reprlab recipes show icl-vs-sft`): SmolLM2 on
built-in sentiment, zero-shot vs ICL k in {1, 5} vs LoRA SFT with checkpoints, TwoNN and Gride
intrinsic dimension per layer and behavioural accuracy.

Run `bash scripts/demo.sh` (which starts the service first), or, with a server already up:
    python examples/quickstart.py [SPEC.yaml | RECIPE] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from rich.console import Console

from reprlab.client import Client, JobSpec
from reprlab.client.plots import (
    format_accuracy,
    format_comparisons,
    format_table,
    plot_comparisons,
    plot_metric,
)
from reprlab.schemas.recipes import RECIPES, recipe_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", nargs="?", default="icl-vs-sft", help="spec file or recipe name")
    parser.add_argument("--out", type=Path, default=Path("reprlab-out"))
    args = parser.parse_args()
    console = Console()

    if args.spec in RECIPES:
        spec = JobSpec.model_validate(recipe_spec(args.spec))
    else:
        spec = JobSpec.model_validate(yaml.safe_load(Path(args.spec).read_text()))
    with Client() as client:
        job = client.jobs.create(spec)
        console.print(f"submitted job [bold]{job.id}[/bold] ({len(spec.conditions)} conditions)")
        job = client.jobs.wait(job.id)
        results = client.jobs.results(job.id)

    for stage in job.stages:
        console.print(f"  {stage.name:<28} {stage.outcome:<7} {stage.seconds:8.1f} s")
    out = args.out / job.id
    out.mkdir(parents=True, exist_ok=True)
    metrics = sorted({c.metric for cond in results.conditions for c in cond.curves})
    for metric in metrics:
        console.print(format_table(results, metric))
        path = plot_metric(results, metric, out / f"{metric}.png")
        console.print(f"plot: [bold]{path}[/bold]")
    if results.comparisons:
        console.print(format_comparisons(results))
        console.print(f"plot: [bold]{plot_comparisons(results, out / 'comparisons.png')}[/bold]")
    accuracy = format_accuracy(results)
    if accuracy is not None:
        console.print(accuracy)


if __name__ == "__main__":
    main()
