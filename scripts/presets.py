"""Run the four built-in recipes, scaled down, through a live server, and check their results.

Each recipe's spec is shrunk (fewer queries, demonstrations, seeds and training steps) but keeps
every condition kind, metric and comparison it names; comparisons also ask for a bootstrap
interval. A recipe passes when every condition has a curve of every metric it names with a
finite value at every layer, and every comparison a mean and an interval at every layer;
except where the results say why not: a condition warning for that layer and curve (e.g. the
attention ratio at the embedding layer, an MLE k above the number of queries), or duplicate
states (e.g. every prompt's last token at the embedding layer) that leave a neighbour-based
value too few distinct points.

    reprlab up && .venv/bin/python scripts/presets.py [--only landscape]

Uses REPRLAB_URL and REPRLAB_API_KEY like the SDK; prints one line per recipe and the time.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from reprlab.client import Client
from reprlab.schemas.recipes import RECIPES, recipe_spec
from reprlab.schemas.results import JobResults

N_EVAL = 80
# Metrics and comparisons that use kNN graphs (undefined where duplicates leave too few points).
NEIGHBOURS = {"id_twonn", "id_gride", "id_mle", "adp", "label_overlap"}
GRAPH_COMPARISONS = {"data_overlap", "partition_ari"}


def scaled(name: str) -> dict[str, Any]:
    """The recipe's spec at a size a CPU runs in minutes."""
    spec = recipe_spec(name)
    spec["dataset"].update(n_eval=N_EVAL, n_train=32)
    spec["name"] = f"{name} (scaled down)"
    for cond in spec["conditions"]:
        if isinstance(cond.get("k"), list):
            cond["k"] = cond["k"][:2]
        if isinstance(cond.get("seed"), list):
            cond["seed"] = cond["seed"][:2]
        if cond.get("paradigm") == "sft":
            cond["epochs"] = 1
            if "checkpoints" in cond:
                cond["checkpoints"] = [2, 4]
            if cond.get("train_on") != "demos":
                cond["steps"] = 4
    for comp in spec.get("comparisons", []):
        comp["bootstrap"] = {"n": 200}
        if "ks" in comp:
            comp["ks"] = [k for k in comp["ks"] if k < N_EVAL] or [10]
    return spec


def problems(spec: dict[str, Any], results: JobResults) -> list[str]:
    """What is missing or undefined in a recipe's results without a reason given."""
    named = {m["name"] for m in spec.get("metrics", [])}
    found: list[str] = []
    dupes = {cond.name: cond.duplicates for cond in results.conditions}
    for cond in results.conditions:
        metrics = {c.metric for c in cond.curves}
        if metrics != named:
            found.append(f"{cond.name}: curves of {sorted(metrics)}, spec names {sorted(named)}")
        for curve in cond.curves:
            for j, (layer, v) in enumerate(zip(curve.layers, curve.values, strict=True)):
                said = [w for w in cond.warnings if w.startswith(f"layer {layer}: ")]
                excused = any(curve.label in w or curve.metric in w for w in said) or (
                    curve.metric in NEIGHBOURS and cond.duplicates[j] > 0
                )
                if not excused and (v is None or not math.isfinite(v)):
                    found.append(f"{cond.name}: {curve.label}: undefined at layer {j}")
    wanted = {c.get("metric", "cosine") for c in spec.get("comparisons", [])}
    if {c.metric for c in results.comparisons} != wanted:
        found.append(f"comparisons {sorted({c.metric for c in results.comparisons})}")
    for comp in results.comparisons:
        for j in range(len(comp.layers)):
            excused = comp.metric in GRAPH_COMPARISONS and any(
                dupes[name][j] > 0 for pair in comp.pairs for name in pair
            )
            ends = (
                comp.mean[j],
                *(None if c is None else c[j] for c in (comp.ci_low, comp.ci_high)),
            )
            if not excused and any(v is None for v in ends):
                found.append(f"{comp.a} vs {comp.b}: {comp.label} (step {comp.step}): layer {j}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(RECIPES), action="append")
    args = parser.parse_args()
    client = Client()
    failed = 0
    for name in args.only or sorted(RECIPES):
        spec = scaled(name)
        start = time.perf_counter()
        job = client.jobs.create(spec)
        client.jobs.wait(job.id)
        results = client.jobs.results(job.id)
        found = problems(spec, results)
        failed += bool(found)
        n_layers = len(results.conditions[0].layers)
        print(
            f"{name:<13} {'PASS' if not found else 'FAIL'}  {len(results.conditions)} results, "
            f"{len(results.comparisons)} comparison curves, {n_layers} layers, "
            f"{time.perf_counter() - start:.0f} s (job {job.id})"
        )
        for line in found:
            print(f"    {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
