"""From tables of rows to a `Dataset`: which rows (split mapping, first n or a seeded sample)
and how a row becomes an item (field mapping, label ids to words).

Order is kept: index i of the queries is the i-th chosen row of the eval split in file order,
and rows are taken as they are (a repeated row stays; the job's `duplicates` policy handles
identical states later). Only the chosen rows are converted, so errors name a used row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from reprlab.schemas.datasets import FileDataset, HFDataset
from reprlab.worker.data.base import Dataset, Example
from reprlab.worker.data.rows import LabelNames, RowMapper
from reprlab.worker.data.tables import Table
from reprlab.worker.errors import DataError

MappedSpec = FileDataset | HFDataset
# A source's tables by split name; a flat source (one table, no split names) has the key None.
Source = Mapping[str | None, Table]
Part = tuple[Table, list[int]]

_EVAL_STREAM, _TRAIN_STREAM, _CARVE_STREAM = 0, 1, 2
_MAX_OPTIONS = 20


def build_dataset(name: str, source: Source, spec: MappedSpec) -> Dataset:
    """The queries and pool a mapped spec asks for, from a source's tables."""
    (eval_table, eval_rows), (train_table, train_rows) = select_rows(name, source, spec)
    label_names = _label_names(spec, eval_table)
    eval_ = RowMapper(eval_table, spec.fields, label_names).examples(eval_rows)
    train = RowMapper(train_table, spec.fields, label_names).examples(train_rows)
    return Dataset(name, train, eval_, "plain", "\n", _options(label_names, eval_ + train))


def select_rows(name: str, source: Source, spec: MappedSpec) -> tuple[Part, Part]:
    """(eval table, row indices), (train table, row indices), each in file order."""
    if None in source:
        return _flat(source[None], spec)
    names = [n for n in source if n is not None]
    if spec.splits is None:
        if len(names) == 1:
            table = source[names[0]]
            return _carve(table, list(range(table.n_rows)), spec)
        raise DataError(
            f"{name} has the splits {_listed(names)}; dataset.splits must say which one is the "
            "pool (train) and which holds the queries (eval)",
            hint=f"set dataset.splits, e.g. {{train: {names[0]!r}, eval: {names[-1]!r}}}",
        )
    for role, split in (("train", spec.splits.train), ("eval", spec.splits.eval)):
        if split not in source:
            raise DataError(
                f"dataset.splits.{role} is {split!r}, but {name} has no such split; its "
                f"splits are {_listed(names)}",
                hint=f"set dataset.splits.{role} to one of {_listed(names)}",
            )
    eval_table, train_table = source[spec.splits.eval], source[spec.splits.train]
    if spec.splits.eval == spec.splits.train:
        return _carve(eval_table, list(range(eval_table.n_rows)), spec)
    return (
        _take(eval_table, list(range(eval_table.n_rows)), spec, "eval"),
        _take(train_table, list(range(train_table.n_rows)), spec, "train"),
    )


def _flat(table: Table, spec: MappedSpec) -> tuple[Part, Part]:
    """Rows of one table: divided as they come, or by the split column's values."""
    splits = spec.splits
    if splits is None:
        return _carve(table, list(range(table.n_rows)), spec)
    column = spec.fields.split
    if column not in table.columns:
        raise DataError(
            f"{table.label} has no column {column!r} naming each row's split, which "
            f"dataset.splits needs; its columns are {_listed(table.columns)}",
            hint="set dataset.fields.split to the column holding the split names, or leave "
            "dataset.splits out (then the queries are the first n_eval rows, the pool the next)",
        )
    values = ["" if v is None else str(v) for v in table.column(column)]
    present = sorted(set(values))

    def rows_of(role: str, split: str) -> list[int]:
        rows = [i for i, v in enumerate(values) if v == split]
        if not rows:
            raise DataError(
                f"dataset.splits.{role} is {split!r}, but no row of {table.label} has that "
                f"value in column {column!r}; the values there are {_listed(present)}",
                hint=f"set dataset.splits.{role} to one of {_listed(present)}",
            )
        return rows

    eval_rows = rows_of("eval", splits.eval)
    if splits.train == splits.eval:
        return _carve(table, eval_rows, spec)
    train_rows = rows_of("train", splits.train)
    return _take(table, eval_rows, spec, "eval"), _take(table, train_rows, spec, "train")


def _take(table: Table, rows: list[int], spec: MappedSpec, role: str) -> Part:
    """The first n rows of a split (or a seeded sample of n), in file order."""
    n = spec.n_eval if role == "eval" else spec.n_train
    if len(rows) < n:
        raise DataError(
            f"{table.label} has {len(rows)} rows for the {role} split, but the spec asks for "
            f"dataset.n_{role} = {n}",
            hint=f"lower dataset.n_{role} to at most {len(rows)}, or use a larger split",
        )
    if spec.sample_seed is None:
        return table, rows[:n]
    stream = _EVAL_STREAM if role == "eval" else _TRAIN_STREAM
    picked = np.random.default_rng([spec.sample_seed, stream]).choice(len(rows), n, replace=False)
    return table, [rows[int(j)] for j in sorted(picked)]


def _carve(table: Table, rows: list[int], spec: MappedSpec) -> tuple[Part, Part]:
    """One split divided: the queries first, then the pool (or a seeded division)."""
    need = spec.n_eval + spec.n_train
    if len(rows) < need:
        raise DataError(
            f"{table.label} has {len(rows)} rows, but the spec asks for dataset.n_eval = "
            f"{spec.n_eval} + dataset.n_train = {spec.n_train} = {need} from it",
            hint="lower dataset.n_eval / dataset.n_train, or map a separate pool split with "
            "dataset.splits",
        )
    if spec.sample_seed is None:
        return (table, rows[: spec.n_eval]), (table, rows[spec.n_eval : need])
    order = np.random.default_rng([spec.sample_seed, _CARVE_STREAM]).permutation(len(rows))
    eval_ = sorted(int(j) for j in order[: spec.n_eval])
    train = sorted(int(j) for j in order[spec.n_eval : need])
    return (table, [rows[j] for j in eval_]), (table, [rows[j] for j in train])


def _label_names(spec: MappedSpec, table: Table) -> LabelNames | None:
    """The spec's label words, else the names of an HF ClassLabel output column."""
    if spec.label_names is not None:
        return dict(spec.label_names)
    names = table.class_names.get(spec.fields.output)
    return None if names is None else {str(i): word for i, word in enumerate(names)}


def _options(label_names: LabelNames | None, examples: Sequence[Example]) -> list[str]:
    """The closed label set accuracy scores against: the label words, else the distinct
    outputs when there are few (open-ended data has none)."""
    if label_names is not None:
        return sorted(set(label_names.values()))
    outputs = sorted({e.output for e in examples})
    return outputs if len(outputs) <= _MAX_OPTIONS else []


def _listed(values: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "") or "none"
