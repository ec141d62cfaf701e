"""Per-layer plots and tables of a job's results."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from reprlab.schemas.results import JobResults, LayerCurve


def _main_curves(results: JobResults, metric: str) -> list[tuple[str, LayerCurve]]:
    out = []
    for cond in results.conditions:
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


def _ok(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _fmt(v: float | None) -> str:
    return f"{v:.3f}" if _ok(v) else "—"


def format_table(results: JobResults, metric: str) -> Table:
    """Rows = layers, one column per condition, a last row with each curve's AUC."""
    curves = _main_curves(results, metric)
    title = f"{curves[0][1].label} per layer"
    table = Table(title=title, min_width=len(title) + 2)
    table.add_column("layer", justify="right")
    for name, _ in curves:
        table.add_column(name, justify="right")
    layers = sorted({layer for _, c in curves for layer in c.layers})
    for layer in layers:
        row = [str(layer)]
        for _, c in curves:
            row.append(_fmt(c.values[c.layers.index(layer)]) if layer in c.layers else "—")
        table.add_row(*row)
    if any("auc" in c.summary for _, c in curves):
        table.add_section()
        table.add_row("AUC", *[_fmt(c.summary.get("auc")) for _, c in curves])
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
    return table
