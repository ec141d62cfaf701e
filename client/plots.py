"""Per-layer plots and tables of a job's results."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from reprlab.schemas.results import JobResults, LayerCurve


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
                ax.errorbar(xs, ys, yerr=errs, marker="o", ms=3, capsize=2, label=label)
            else:
                ax.plot(xs, ys, marker="o", ms=3, label=label)
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


def plot_comparisons(results: JobResults, path: str | Path) -> Path:
    """One PNG: each comparison (a vs b) per layer, a panel per k, mean with a +-std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results.comparisons:
        raise KeyError("this job has no comparisons")
    ks = sorted({c.k for c in results.comparisons}, key=lambda k: -1 if k is None else k)
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.8), dpi=120, squeeze=False)
    try:
        for ax, k in zip(axes[0], ks, strict=True):
            for comp in (c for c in results.comparisons if c.k == k):
                lo = [m - s for m, s in zip(comp.mean, comp.std, strict=True)]
                hi = [m + s for m, s in zip(comp.mean, comp.std, strict=True)]
                (line,) = ax.plot(comp.layers, comp.mean, marker="o", ms=2,
                                  label=f"{comp.a} vs {comp.b}")  # fmt: skip
                ax.fill_between(comp.layers, lo, hi, color=line.get_color(), alpha=0.2)
            ax.set_title("all" if k is None else f"k = {k}", fontsize=10)
            ax.set_xlabel("layer (0 = embeddings)")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("cosine similarity (mean ± std over seeds)")
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"Cross-condition similarity — {results.model.name}", fontsize=10)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def format_comparisons(results: JobResults) -> Table | None:
    """Rows = layers, a column per comparison and k with 'mean ± std'; None if none."""
    comps = results.comparisons
    if not comps:
        return None
    table = Table(title="Cosine similarity per layer (mean ± std over seeds)")
    table.add_column("layer", justify="right")
    for c in comps:
        name = f"{c.a}~{c.b}" + ("" if c.k is None else f" k{c.k}")
        table.add_column(name, justify="right", overflow="fold")
    for j, layer in enumerate(comps[0].layers):
        table.add_row(str(layer), *[f"{c.mean[j]:.3f}±{c.std[j]:.3f}" for c in comps])
    return table


def _ok(v: float | None) -> bool:
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
