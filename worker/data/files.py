"""Dataset files: JSON (a list of items, or {split: [items]}), JSONL, CSV and Parquet, read
from the worker's data roots or from an upload in the artifact store, into `Table`s.

The bytes are read whole (at most `MAX_FILE_BYTES`) and parsed without guessing beyond the
format: JSON and JSONL keep their values' types; CSV keeps the input and output columns as
text and lets pandas type the others (numbers stay numbers, for numeric labels); Parquet
keeps its schema. Every error names the file, and the line or row where one is at fault.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reprlab.schemas.datasets import DataFormat, FieldMap, FileDataset, format_of
from reprlab.server import dataset_uploads
from reprlab.server.paths import PathNotAllowed, resolve_under_roots
from reprlab.server.storage import ArtifactNotFound, ArtifactStore
from reprlab.worker.data.mapping import Source
from reprlab.worker.data.tables import RecordTable, Row, short
from reprlab.worker.errors import DataError

MAX_FILE_BYTES = 512 * 1024 * 1024
_FIX_HINT = "fix the file (the message names where), or upload a corrected one"


def read_file_source(
    spec: FileDataset, *, data_roots: Sequence[Path], store: ArtifactStore | None
) -> tuple[str, Source]:
    """The file's name and its tables by split (a flat file: the single key None)."""
    fmt: DataFormat | None
    if spec.upload is not None:
        name, fmt, data = _uploaded(spec.upload, store)
    else:
        path = data_path(spec.path or "", data_roots, what="dataset file")
        fmt = format_of(path.name)
        data = read_checked(path, spec.path or "", what="dataset file", field="dataset.path")
        name = path.name
    if spec.format != "auto":
        fmt = spec.format
    if fmt is None:  # the schema refuses such a path; an upload always records its format
        raise DataError(f"cannot tell the format of {name!r}", hint="set dataset.format")
    return name, parse(data, fmt, name, spec.fields)


def parse(data: bytes, fmt: DataFormat, name: str, fields: FieldMap) -> Source:
    """The tables of a file's bytes in one of the formats."""
    if fmt == "parquet":
        return {None: _parquet(data, name)}
    if fmt == "csv":
        return {None: _csv(data, name, fields)}
    try:
        text = data.decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} is not UTF-8 text: {exc}", hint="save the file as UTF-8") from None
    return _json(text, name) if fmt == "json" else {None: _jsonl(text, name)}


def data_path(raw: str, data_roots: Sequence[Path], *, what: str) -> Path:
    """The resolved path if it lies under a data root (symlinks followed), else DataError."""
    try:
        return resolve_under_roots(
            raw, data_roots, what=f"{what} path", kind="data", setting="REPRLAB_DATA_ROOTS",
            search_roots=True,
        )  # fmt: skip
    except PathNotAllowed as exc:
        raise DataError(exc.message, hint=f"{exc.hint}; or upload the file") from None


def read_checked(
    path: Path, raw: str, *, what: str, field: str, max_bytes: int = MAX_FILE_BYTES
) -> bytes:
    """The bytes of a resolved data file (`data_path`), else DataError: missing, not a file,
    larger than `max_bytes`, or unreadable. `what` names the file, `field` the spec field."""
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise DataError(f"{what} {raw} {problem} (looked at {path})",
                        hint=f"check {field}")  # fmt: skip
    if path.stat().st_size > max_bytes:
        raise DataError(f"{what} {raw} is larger than {max_bytes} bytes",
                        hint="split it (a dataset can also be converted to Parquet)")  # fmt: skip
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {what} {raw}: {exc.strerror}") from None


def _uploaded(upload_id: str, store: ArtifactStore | None) -> tuple[str, DataFormat, bytes]:
    hint = "upload the file again (`reprlab datasets upload PATH`) and use the id it prints"
    if store is None:
        raise DataError(f"dataset.upload {upload_id} needs the artifact store, which this run "
                        "has none of", hint="give dataset.path instead")  # fmt: skip
    record = dataset_uploads.read_record(store, upload_id)
    if record is None:
        raise DataError(f"no uploaded dataset {upload_id!r} in the artifact store", hint=hint)
    try:
        data = store.get_bytes(dataset_uploads.content_key(record.sha256, record.format))
    except ArtifactNotFound:
        raise DataError(f"the content of uploaded dataset {upload_id!r} ({record.filename}) "
                        "is missing from the artifact store", hint=hint) from None  # fmt: skip
    return record.filename, record.format, data


def _json(text: str, name: str) -> Source:
    """A list of items (one flat table), or an object of splits {name: [items]}."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}, column "
                        f"{exc.colno}", hint=_FIX_HINT) from None  # fmt: skip
    except RecursionError:
        raise DataError(f"{name}: JSON nested too deeply to read", hint=_FIX_HINT) from None
    shape = "a JSON dataset is a list of objects, or an object of splits {name: [objects]}"
    if isinstance(data, list):
        return {None: _items(data, name, lambda i: f"{name}, item {i}")}
    if not isinstance(data, dict) or not data:
        raise DataError(
            f"{name} holds {type(data).__name__} {short(data)}; {shape}", hint=_FIX_HINT
        )
    source: dict[str | None, RecordTable] = {}
    for split, items in data.items():
        if not isinstance(items, list):
            raise DataError(f"{name}: split {split!r} is {type(items).__name__} {short(items)}, "
                            f"not a list of items; {shape}", hint=_FIX_HINT)  # fmt: skip
        label = f"{name}, split {split!r}"
        source[split] = _items(items, label, lambda i, s=split: f"{name}, {s}[{i}]")
    return source


def _items(items: list[Any], label: str, where: Any) -> RecordTable:
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"{where(i)}: expected a JSON object, got {type(item).__name__} "
                            f"{short(item)}", hint=_FIX_HINT)  # fmt: skip
    return RecordTable(label, items, uniform=False, where=where)


def _jsonl(text: str, name: str) -> RecordTable:
    """One object per line; blank lines are skipped (row i is the i-th object)."""
    records: list[Row] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}, line {number}: not valid JSON ({exc.msg} at column "
                            f"{exc.colno})", hint=_FIX_HINT) from None  # fmt: skip
        if not isinstance(obj, dict):
            raise DataError(f"{name}, line {number}: expected a JSON object, got "
                            f"{type(obj).__name__} {short(obj)}", hint=_FIX_HINT)  # fmt: skip
        records.append(obj)
        lines.append(number)
    return RecordTable(name, records, uniform=False, where=lambda i: f"{name}, line {lines[i]}")


def _csv(data: bytes, name: str, fields: FieldMap) -> RecordTable:
    """A header row, then one row per item; empty cells are missing values."""
    import pandas as pd

    text_columns = {fields.input: str, fields.output: str}
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=text_columns, keep_default_na=False,
                            na_values=[""], encoding="utf-8-sig")  # fmt: skip
    except pd.errors.EmptyDataError:
        raise DataError(f"{name} is empty (no header row)", hint=_FIX_HINT) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{name} is not a readable CSV file: {exc}", hint=_FIX_HINT) from None
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    records: list[Row] = frame.to_dict("records")
    # Row i is data row i + 1 after the header (a line number only without multi-line cells).
    return RecordTable(name, records, uniform=True, columns=columns,
                       where=lambda i: f"{name}, data row {i + 1}")  # fmt: skip


def _parquet(data: bytes, name: str) -> RecordTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{name} is not a readable Parquet file: {exc}", hint=_FIX_HINT) from None
    return RecordTable(name, table.to_pylist(), uniform=True, columns=table.column_names,
                       where=lambda i: f"{name}, row {i}")  # fmt: skip
