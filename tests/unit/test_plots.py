"""Plots and tables from a constructed JobResults."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from reprlab.client.plots import format_table, plot_metric
from reprlab.schemas.results import ConditionResult, JobResults, LayerCurve, ModelInfo

LABEL = "TwoNN ID (discard 10%)"


def _results() -> JobResults:
    def cond(name: str, values: list[float | None], auc: float, errors: bool) -> ConditionResult:
        curve = LayerCurve(
            metric="id_twonn", label=LABEL, layers=[0, 1, 2, 3], values=values,
            errors=[0.1, 0.2, None, 0.1] if errors else None, summary={"auc": auc},
        )  # fmt: skip
        return ConditionResult(
            name=name, paradigm="icl", n_items=10, layers=[0, 1, 2, 3], curves=[curve]
        )

    return JobResults(
        job_id="j1",
        model=ModelInfo(
            name="tiny", resolved="/m", n_layers=3, hidden_size=8, dtype="float32", device="cpu"
        ),  # fmt: skip
        conditions=[
            cond("zs", [1.0, 2.5, None, 3.25], 0.5, False),
            cond("icl-5", [1.5, 3.0, 4.0, 4.123456], 0.75, True),
        ],  # fmt: skip
    )


def test_plot_metric_writes_png(tmp_path: Path) -> None:
    path = plot_metric(_results(), "id_twonn", tmp_path / "sub" / "id.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_unknown_metric_names_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="id_twonn"):
        plot_metric(_results(), "cka", tmp_path / "x.png")


def test_format_table_rows_and_columns() -> None:
    table = format_table(_results(), "id_twonn")
    assert [c.header for c in table.columns] == ["layer", "zs", "icl-5"]
    cells = [list(c.cells) for c in table.columns]
    assert cells[0] == ["0", "1", "2", "3", "AUC"]
    assert cells[1] == ["1.000", "2.500", "—", "3.250", "0.500"]
    assert cells[2][3] == "4.123" and cells[2][4] == "0.750"
    console = Console(record=True, width=100)
    console.print(table)
    assert LABEL in console.export_text()


def test_format_accuracy_lists_conditions_with_a_measurement() -> None:
    from reprlab.client.plots import format_accuracy
    from reprlab.schemas.results import BehaviourResult

    results = _results()
    assert format_accuracy(results) is None
    results.conditions[1].behaviour = BehaviourResult(
        accuracy=0.75, accuracy_norm=0.5, first_token_accuracy=0.25, n_items=4,
        options=["negative", "positive"],
    )  # fmt: skip
    table = format_accuracy(results)
    assert table is not None and table.row_count == 1
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "icl-5" in text and "0.750" in text and "0.500" in text and "zs" not in text


def _with_seeds_and_comparisons() -> JobResults:
    from reprlab.schemas.results import AggregateResult, ComparisonResult

    results = _results()
    mean = LayerCurve(metric="id_twonn", label=LABEL, layers=[0, 1, 2, 3],
                      values=[1.0, 2.0, 3.0, 4.0], spread=[0.1, 0.1, 0.2, 0.3])  # fmt: skip
    results.aggregates = [
        AggregateResult(name="icl", group="icl", members=["zs", "icl-5"], curves=[mean])
    ]
    results.comparisons = [
        ComparisonResult(
            metric="cosine",
            a="icl",
            b="it",
            k=k,
            layers=[0, 1, 2, 3],
            mean=[0.9, 0.8, 0.7, 0.6],
            std=[0.01, 0.02, 0.03, 0.04],
            pairs=[["icl.s0", "it.s0"]],
        )  # fmt: skip
        for k in (1, 5)
    ]
    return results


def test_seed_members_are_drawn_as_their_mean_with_the_spread() -> None:
    from reprlab.client.plots import _main_curves

    curves = _main_curves(_with_seeds_and_comparisons(), "id_twonn")
    assert [name for name, _ in curves] == ["icl (2 seeds)"]
    assert curves[0][1].errors == [0.1, 0.1, 0.2, 0.3]


def test_comparisons_plot_and_table(tmp_path: Path) -> None:
    from reprlab.client.plots import format_comparisons, plot_comparisons

    results = _with_seeds_and_comparisons()
    path = plot_comparisons(results, tmp_path / "cmp.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_comparisons(results)
    assert table is not None
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "icl~it k1" in text and "icl~it k5" in text and "0.700±0.030" in text
    assert format_comparisons(_results()) is None
    with pytest.raises(KeyError, match="no comparisons"):
        plot_comparisons(_results(), tmp_path / "none.png")


def test_a_wide_table_wraps_names_instead_of_cutting_them() -> None:
    results = _results()
    base = results.conditions[0]
    results.conditions = [base.model_copy(update={"name": f"lora.step{i}0"}) for i in range(8)]
    console = Console(width=80, record=True)
    console.print(format_table(results, "id_twonn"))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "2.50" in text and "2.500" not in text  # two decimals with many columns


def test_comparison_matrices_and_null_layers_are_drawn_and_tabled(tmp_path: Path) -> None:
    from reprlab.client.plots import format_comparisons, plot_comparisons
    from reprlab.schemas.results import ComparisonResult

    results = _with_seeds_and_comparisons()
    results.comparisons.append(
        ComparisonResult(
            metric="cka", label="CKA, linear, biased", params={"debiased": False}, a="icl",
            b="it", layers=[0, 1, 2, 3], mean=[None, 0.8, 0.7, 0.6], std=[None, 0.0, 0.0, 0.0],
            pairs=[["icl.s0", "it.s0"]],
            matrix=[[None, 0.1, 0.2, 0.3], [0.1, 0.8, 0.4, 0.3], [0.2, 0.4, 0.7, 0.5],
                    [0.3, 0.3, 0.5, 0.6]],
        )
    )  # fmt: skip
    path = plot_comparisons(results, tmp_path / "cmp.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    console = Console(width=160, record=True)
    table = format_comparisons(results)
    assert table is not None
    console.print(table)
    text = console.export_text()
    assert "cka icl~it debiased=False" in text and "—" in text and "0.800±0.000" in text
