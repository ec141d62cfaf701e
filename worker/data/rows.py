"""One row -> one `Example`, by the spec's field mapping; every refusal names the row, the
field and what the row has instead."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from reprlab.schemas.datasets import FieldMap, label_id_key
from reprlab.schemas.specs import Item
from reprlab.worker.data.base import Example
from reprlab.worker.data.tables import Row, Table, clean, short
from reprlab.worker.errors import DataError

LabelNames = dict[str, str]
Scalar = str | int | float


class RowMapper:
    """Turns rows of one table into examples: input and output text, labels, spans."""

    def __init__(self, table: Table, fields: FieldMap, label_names: LabelNames | None) -> None:
        self.table, self.fields, self.label_names = table, fields, label_names
        if isinstance(fields.labels, list):
            self.label_columns: dict[str, str] | None = {c: c for c in fields.labels}
        else:
            self.label_columns = None if fields.labels is None else dict(fields.labels)
        self._not_labels = {fields.input, fields.output, fields.split, fields.spans}

    def examples(self, indices: Sequence[int]) -> list[Example]:
        """The examples of rows `indices`, in that order."""
        if self.table.uniform:
            self._check_columns()
        return [self._example(i, row) for i, row in zip(indices, self.table.rows(indices),
                                                         strict=True)]  # fmt: skip

    def _check_columns(self) -> None:
        wanted = [("input", self.fields.input), ("output", self.fields.output)]
        wanted += [(f"labels ({name})", col) for name, col in (self.label_columns or {}).items()]
        for role, column in wanted:
            if column not in self.table.columns:
                raise DataError(
                    f"{self.table.label} has no column {column!r} (dataset.fields.{role}); its "
                    f"columns are {', '.join(map(repr, self.table.columns)) or 'none'}",
                    hint="set dataset.fields to the columns that hold input, output and labels",
                )

    def _example(self, index: int, row: Row) -> Example:
        where = self.table.where(index)
        text = self._text(row, where, "input")
        output = self._output(row, where)
        labels = self._labels(row, where)
        spans = clean(row.get(self.fields.spans))
        if spans is not None and not isinstance(spans, dict):
            raise DataError(
                f"{where}: field {self.fields.spans!r} (spans) must be an object "
                f"{{name: [start, end]}}, got {type(spans).__name__} {short(spans)}",
                hint="fix the row's spans, or set dataset.fields.spans to another column",
            )
        try:
            item = Item(input=text, output=output, labels=labels, spans=spans or {})
        except ValidationError as exc:
            problem = exc.errors()[0]
            loc = ".".join(str(p) for p in problem["loc"])
            raise DataError(f"{where}: {loc}: {problem['msg']}", hint="fix the row") from None
        return Example(item.input, item.output, dict(item.labels),
                       {n: (s[0], s[1]) for n, s in item.spans.items()})  # fmt: skip

    def _value(self, row: Row, column: str, where: str, role: str) -> Any:
        if column not in row:
            raise DataError(
                f"{where}: no field {column!r} (dataset.fields.{role}); the row has "
                f"{', '.join(map(repr, row)) or 'no fields'}",
                hint="set dataset.fields to the fields that hold input, output and labels",
            )
        return clean(row[column])

    def _text(self, row: Row, where: str, role: str) -> str:
        column = getattr(self.fields, role)
        value = self._value(row, column, where, role)
        if not isinstance(value, str):
            got = "nothing (empty)" if value is None else f"{type(value).__name__} {short(value)}"
            hint = "give every row a non-empty text"
            if role == "output" and label_id_key(value) is not None:
                hint = ("the outputs look like label ids: give dataset.label_names, e.g. "
                        "{0: 'negative', 1: 'positive'}")  # fmt: skip
            raise DataError(f"{where}: field {column!r} (dataset.fields.{role}) must be text, "
                            f"got {got}", hint=hint)  # fmt: skip
        if not value:
            raise DataError(f"{where}: field {column!r} (dataset.fields.{role}) is empty",
                            hint="give every row a non-empty text, or remove the row")  # fmt: skip
        return value

    def _output(self, row: Row, where: str) -> str:
        if self.label_names is None:
            return self._text(row, where, "output")
        raw = self._value(row, self.fields.output, where, "output")
        key = label_id_key(raw)
        if key is None or key not in self.label_names:
            ids = ", ".join(map(repr, list(self.label_names)[:20]))
            raise DataError(
                f"{where}: label id {short(raw)} in field {self.fields.output!r} has no entry "
                f"in dataset.label_names (its ids: {ids})",
                hint=f"add {key if key is not None else short(raw)!r} to dataset.label_names, "
                "or fix the row",
            )
        return self.label_names[key]

    def _labels(self, row: Row, where: str) -> dict[str, Scalar]:
        if self.label_columns is None:
            return self._auto_labels(row)
        labels: dict[str, Scalar] = {}
        for name, column in self.label_columns.items():
            value = _scalar(self._value(row, column, where, f"labels ({name})"))
            if value is None:
                raw = clean(row[column])
                got = "nothing (empty)" if raw is None else f"{type(raw).__name__} {short(raw)}"
                raise DataError(
                    f"{where}: label field {column!r} must be a string or a number, got {got}",
                    hint="fix the row, or leave the column out of dataset.fields.labels",
                )
            labels[name] = value
        return labels

    def _auto_labels(self, row: Row) -> dict[str, Scalar]:
        """Every other field holding a string or number, and the fields of a 'labels' object
        (the JSONL convention); others (lists, objects, empty cells) are not labels."""
        labels: dict[str, Scalar] = {}
        nested = row.get("labels")
        if isinstance(nested, dict) and "labels" not in self._not_labels:
            for key, value in nested.items():
                scalar = _scalar(clean(value))
                if scalar is not None:
                    labels[str(key)] = scalar
        for key, value in row.items():
            scalar = _scalar(clean(value))
            if key not in self._not_labels and scalar is not None:
                labels[key] = scalar
        return labels


def _scalar(value: Any) -> Scalar | None:
    """A label value (booleans as 1/0), or None for anything that cannot be one."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (str, int, float)):
        return value
    return None
