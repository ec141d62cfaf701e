"""Per-layer plots and tables of a job's results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeGuard

from rich.table import Table

from reprlab.schemas.results import ComparisonResult, CorrelationResult, JobResults, LayerCurve


def _main_curves(results: JobResults, metric: str) -> list[tuple[str, LayerCurve]]:
    """(name, curve) per condition; seed members are replaced by their mean over seeds."""
    out = []
    aggregated = {m: agg for agg in results.aggregates for m in agg.members}
    for cond in results.conditions:
        agg = aggregated.get(cond.name)
        if agg is not None:
            if agg.members[0] == cond.name:
                for curve in agg.curves:
                    if curve.metric == metric:
                        mean = curve.model_copy(update={"errors": curve.spread})
                        out.append((f"{agg.name} ({len(agg.members)} seeds)", mean))
            continue
        try:
            out.append((cond.name, cond.curve(metric)))
        except KeyError:
            continue
    if not out:
        have = sorted({c.metric for cond in results.conditions for c in cond.curves})
        raise KeyError(f"no condition has metric {metric!r}; have {have}")
    return out


def plot_metric(results: JobResults, metric: str, path: str | Path) -> Path:
    """One PNG: the metric's main curve vs layer, one line per condition, AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = _main_curves(results, metric)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    try:
        for name, curve in curves:
            points = [
                (x, float(v), float(e) if e is not None and math.isfinite(e) else 0.0)
                for x, v, e in zip(
                    curve.layers,
                    curve.values,
                    curve.errors or [None] * len(curve.values),
                    strict=True,
                )
                if v is not None and math.isfinite(v)
            ]
            xs, ys, errs = [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]
            auc = curve.summary.get("auc")
            label = name if auc is None else f"{name} (AUC {auc:.3g})"
            if curve.errors is not None:
                bars = ax.errorbar(xs, ys, yerr=errs, marker="o", ms=3, capsize=2, label=label)
                line = bars.lines[0]
            else:
                (line,) = ax.plot(xs, ys, marker="o", ms=3, label=label)
            if curve.ci_low is not None and curve.ci_high is not None:
                band = [
                    (x, float(lo), float(hi))
                    for x, lo, hi in zip(curve.layers, curve.ci_low, curve.ci_high, strict=True)
                    if _ok(lo) and _ok(hi)
                ]
                ax.fill_between(
                    [b[0] for b in band],
                    [b[1] for b in band],
                    [b[2] for b in band],
                    color=line.get_color(),
                    alpha=0.15,
                )
        first = curves[0][1]
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel(first.label)
        ax.set_title(f"{first.label} — {results.model.name}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _comparison_groups(results: JobResults) -> dict[str, list[ComparisonResult]]:
    """Comparisons by exact label (metric and parameters), in result order."""
    groups: dict[str, list[ComparisonResult]] = {}
    for comp in results.comparisons:
        groups.setdefault(comp.label or comp.metric, []).append(comp)
    return groups


def _comparison_name(comp: ComparisonResult) -> str:
    name = f"{comp.a} vs {comp.b}"
    if comp.step is not None:
        name += f" step {comp.step}"
    return name


def plot_comparisons(results: JobResults, path: str | Path) -> Path:
    """One PNG: a row of panels per comparison metric, a panel per k; mean with a +-std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results.comparisons:
        raise KeyError("this job has no comparisons")
    groups = _comparison_groups(results)
    ks_of = {
        label: sorted({c.k for c in comps}, key=lambda k: -1 if k is None else k)
        for label, comps in groups.items()
    }
    matrices = [c for c in results.comparisons if c.matrix is not None]
    cols = max(max(len(ks) for ks in ks_of.values()), len(matrices))
    rows = len(groups) + bool(matrices)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), dpi=120, squeeze=False)
    try:
        for row, (label, comps) in enumerate(groups.items()):
            for col in range(cols):
                ax = axes[row][col]
                if col >= len(ks_of[label]):
                    ax.set_visible(False)
                    continue
                k = ks_of[label][col]
                for comp in (c for c in comps if c.k == k):
                    pts = [
                        (x, float(m), float(s) if _ok(s) else 0.0)
                        for x, m, s in zip(comp.layers, comp.mean, comp.std, strict=True)
                        if _ok(m)
                    ]
                    xs = [p[0] for p in pts]
                    (line,) = ax.plot(xs, [p[1] for p in pts], marker="o", ms=2,
                                      label=_comparison_name(comp))  # fmt: skip
                    ax.fill_between(xs, [p[1] - p[2] for p in pts], [p[1] + p[2] for p in pts],
                                    color=line.get_color(), alpha=0.2)  # fmt: skip
                ax.set_title(("all" if k is None else f"k = {k}"), fontsize=9)
                ax.set_xlabel("layer (0 = embeddings)")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
                if col == 0:
                    ax.set_ylabel(_wrap(label), fontsize=8)
        if matrices:
            _draw_matrices(fig, axes[-1], matrices)
        fig.suptitle(
            f"Cross-condition comparisons (mean ± std over seeds) — {results.model.name}",
            fontsize=10,
        )
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _draw_matrices(fig: Any, axes: Any, comps: list[ComparisonResult]) -> None:
    """Heatmaps of layer x layer comparisons (a's layers down, b's across), one per panel."""
    import numpy as np

    for col, ax in enumerate(axes):
        if col >= len(comps):
            ax.set_visible(False)
            continue
        comp = comps[col]
        grid = np.array(
            [[np.nan if v is None else v for v in row] for row in comp.matrix or []], dtype=float
        )
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_xlabel(f"{comp.b} layer")
        ax.set_ylabel(f"{comp.a} layer")
        k = "" if comp.k is None else f", k = {comp.k}"
        ax.set_title(_wrap(f"{comp.label}{k}, layer x layer"), fontsize=8)


def _wrap(text: str, width: int = 40) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def format_comparisons(results: JobResults) -> Table | None:
    """Rows = layers, a column per comparison curve (metric, k, step) with 'mean ± std'."""
    comps = results.comparisons
    if not comps:
        return None
    table = Table(title="Comparisons per layer (mean ± std over seeds)")
    table.add_column("layer", justify="right")
    for c in comps:
        name = f"{c.metric} {c.a}~{c.b}"
        name += "".join(f" {k}={v}" for k, v in c.params.items() if k in ("k", "debiased"))
        name += "" if c.k is None else f" k{c.k}"
        name += "" if c.step is None else f" step{c.step}"
        table.add_column(name, justify="right", overflow="fold")
    layers = sorted({layer for c in comps for layer in c.layers})
    for layer in layers:
        row = [str(layer)]
        for c in comps:
            j = c.layers.index(layer) if layer in c.layers else None
            m = c.mean[j] if j is not None else None
            sd = c.std[j] if j is not None else None
            row.append(f"{_fmt(m)}±{_fmt(sd)}" if _ok(m) else "—")
        table.add_row(*row)
    return table


def _ok(v: float | None) -> TypeGuard[float]:
    return v is not None and math.isfinite(v)


def _fmt(v: float | None, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if _ok(v) else "—"


def format_table(results: JobResults, metric: str) -> Table:
    """Rows = layers, one column per condition, a last row with each curve's AUC."""
    curves = _main_curves(results, metric)
    title = f"{curves[0][1].label} per layer"
    table = Table(title=title, min_width=len(title) + 2)
    table.add_column("layer", justify="right")
    for name, _ in curves:
        # Long names (seeds, checkpoints) wrap instead of being cut to "lora.…".
        table.add_column(name, justify="right", overflow="fold")
    layers = sorted({layer for _, c in curves for layer in c.layers})
    digits = 3 if len(curves) <= 6 else 2  # many columns: keep the table on one screen
    for layer in layers:
        row = [str(layer)]
        for _, c in curves:
            value = c.values[c.layers.index(layer)] if layer in c.layers else None
            row.append(_fmt(value, digits))
        table.add_row(*row)
    if any("auc" in c.summary for _, c in curves):
        table.add_section()
        table.add_row("AUC", *[_fmt(c.summary.get("auc"), digits) for _, c in curves])
    return table


def format_correlations(results: JobResults) -> list[Table]:
    """One table per correlation result: rows = layers; Pearson and Spearman r, each with its
    bootstrap interval and p-value, and the number of points."""
    return [_correlation_table(c) for c in results.correlations]


def _correlation_table(c: CorrelationResult) -> Table:
    table = Table(title=c.label, caption=c.ci, title_justify="left")
    for col in ("layer", "n", "Pearson r", "CI", "p", "Spearman r", "CI", "p"):
        table.add_column(col, justify="right")
    for j, layer in enumerate(c.layers):
        table.add_row(
            str(layer), str(c.n[j]),
            _fmt(c.pearson[j]), _interval(c.pearson_ci_low, c.pearson_ci_high, j),
            _fmt_p(c.pearson_p[j]),
            _fmt(c.spearman[j]), _interval(c.spearman_ci_low, c.spearman_ci_high, j),
            _fmt_p(c.spearman_p[j]),
        )  # fmt: skip
    return table


def _interval(low: list[float | None] | None, high: list[float | None] | None, j: int) -> str:
    if low is None or high is None or not (_ok(low[j]) and _ok(high[j])):
        return "—"
    return f"[{_fmt(low[j])}, {_fmt(high[j])}]"


def _fmt_p(v: float | None) -> str:
    return f"{v:.2g}" if _ok(v) else "—"


def format_accuracy(results: JobResults) -> Table | None:
    """One row per condition with its behavioural accuracy; None if none was measured."""
    rows = [(c.name, c.behaviour) for c in results.conditions if c.behaviour is not None]
    if not rows:
        return None
    table = Table(title="Behavioural accuracy (log-likelihood of the label options)")
    for col in ("condition", "accuracy", "length-normalised", "first token", "items"):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for name, b in rows:
        table.add_row(name, _fmt(b.accuracy), _fmt(b.accuracy_norm),
                      _fmt(b.first_token_accuracy), str(b.n_items))  # fmt: skip
    aggregates = [a for a in results.aggregates if a.accuracy is not None]
    if aggregates:
        table.add_section()
    for agg in aggregates:
        acc = agg.accuracy
        if acc is not None:
            label = f"{agg.name} (mean ± std, {len(agg.members)} seeds)"
            table.add_row(label, f"{acc.mean:.3f} ± {acc.std:.3f}", "", "", "")
    return table
