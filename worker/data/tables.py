"""Rows as every reader gives them: a `Table` per source split, rows fetched by index.

Files are read whole into `RecordTable`s; a Hugging Face dataset stays memory-mapped behind
its own `Table` (`hub.py`), so a large dataset costs only the rows a job uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Row = dict[str, Any]


class Table:
    """One split of a source, in file order: row i is the i-th row of the file (or split).

    `uniform` means every row has exactly `columns` (CSV, Parquet, HF), so a missing column
    is reported once for the whole table; rows of JSON and JSONL may differ in their fields.
    """

    def __init__(self, label: str, columns: Sequence[str], n_rows: int, *, uniform: bool,
                 class_names: Mapping[str, Sequence[str]] | None = None) -> None:  # fmt: skip
        self.label = label
        self.columns = list(columns)
        self.n_rows = n_rows
        self.uniform = uniform
        self.class_names = dict(class_names or {})  # ClassLabel names of HF columns

    def rows(self, indices: Sequence[int]) -> list[Row]:
        """The rows at `indices`, in that order."""
        raise NotImplementedError

    def column(self, name: str) -> list[Any]:
        """Every row's value of one column (None where a row lacks it)."""
        raise NotImplementedError

    def where(self, index: int) -> str:
        """How an error names row `index`, e.g. 'data.jsonl, line 7'."""
        return f"{self.label}, row {index}"


class RecordTable(Table):
    """Rows held in memory as dicts (JSON, JSONL, CSV, Parquet)."""

    def __init__(self, label: str, records: list[Row], *, uniform: bool,
                 columns: Sequence[str] | None = None,
                 where: Callable[[int], str] | None = None) -> None:  # fmt: skip
        super().__init__(label, columns if columns is not None else _union_of_keys(records),
                         len(records), uniform=uniform)  # fmt: skip
        self._records = records
        self._where = where

    def rows(self, indices: Sequence[int]) -> list[Row]:
        return [self._records[i] for i in indices]

    def column(self, name: str) -> list[Any]:
        return [clean(r.get(name)) for r in self._records]

    def where(self, index: int) -> str:
        return self._where(index) if self._where is not None else super().where(index)


def _union_of_keys(records: list[Row]) -> list[str]:
    """Every field that some row has, in order of first appearance."""
    seen: dict[str, None] = {}
    for record in records:
        for key in record:
            seen.setdefault(key, None)
    return list(seen)


def clean(value: Any) -> Any:
    """A value with missing markers unified: NaN (pandas' empty CSV cell) becomes None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def short(value: Any, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
