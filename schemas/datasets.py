"""Dataset specs for real data: files (JSON, JSONL, CSV, Parquet, uploads) and Hugging Face
`datasets`, with the field, split and label mapping they share; and the upload record.

Kept apart from `specs.py` (which imports these into its `DatasetSpec` union) so the mapping
rules live in one place. Pure pydantic: the workers read the data (`worker/data/files.py`,
`worker/data/hub.py`), the server checks paths and uploads at submission.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePath
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from reprlab.schemas._base import ResponseModel, StrictModel

DataFormat = Literal["json", "jsonl", "csv", "parquet"]
FORMATS: tuple[DataFormat, ...] = ("json", "jsonl", "csv", "parquet")
FORMAT_BY_EXTENSION: dict[str, DataFormat] = {
    ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip
UPLOAD_ID_PATTERN = r"^[0-9a-f]{32}$"
HUB_DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"


def format_of(filename: str) -> DataFormat | None:
    """The data format a file name's extension says (case-insensitive), or None."""
    return FORMAT_BY_EXTENSION.get(PurePath(filename).suffix.lower())


class FieldMap(StrictModel):
    """Which columns (fields) of a row make an item."""

    input: str = Field(
        default="input", description="Column holding the query text.", min_length=1, max_length=256
    )
    output: str = Field(
        default="output",
        description=(
            "Column holding the target: text, or a label id that `label_names` turns into a word."
        ),
        min_length=1,
        max_length=256,
    )
    labels: list[str] | dict[str, str] | None = Field(
        default=None,
        description=(
            "Columns that become item labels (for metrics such as ARI vs a label): a list of "
            "column names (the label takes the column's name), or {label: column}. None: every "
            "other column holding a string or number (and the fields of a 'labels' object)."
        ),
    )
    split: str = Field(
        default="split",
        description=(
            "Column naming each row's split in a flat table (JSONL, CSV, Parquet, a JSON list, "
            "an HF dataset without splits); read only when `splits` is given."
        ),
        min_length=1,
        max_length=256,
    )
    spans: str = Field(
        default="spans",
        description="Column holding an item's spans {name: [start, end]}, if the data has one.",
        min_length=1,
        max_length=256,
    )


class SplitMap(StrictModel):
    """Which split of the data is the pool and which holds the queries."""

    train: str = Field(
        description="The source split used as the demonstration / training pool, e.g. 'train'.",
        min_length=1,
        max_length=128,
    )
    eval: str = Field(
        description=(
            "The source split whose items are the analysed queries, e.g. 'validation'. Naming "
            "the same split as `train` divides it: the queries first, then the pool."
        ),
        min_length=1,
        max_length=128,
    )


class DatasetSizes(StrictModel):
    """How many queries are analysed and how many items form the pool: every dataset kind."""

    n_eval: int = Field(
        default=200, ge=1, le=100_000, description="Number of query items that are analysed."
    )
    n_train: int = Field(
        default=200,
        ge=0,
        le=100_000,
        description="Number of items in the demonstration / training pool (disjoint from queries).",
    )


class _MappedDataset(DatasetSizes):
    """Sizes, sampling and the mapping shared by file and Hugging Face datasets."""

    sample_seed: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description=(
            "None: the queries are the first n_eval rows of their split and the pool the first "
            "n_train of its split, in file order. A seed: a seeded sample of that many rows "
            "instead, still in file order."
        ),
    )
    fields: FieldMap = Field(
        default_factory=FieldMap, description="Which columns hold input, output and labels."
    )
    splits: SplitMap | None = Field(
        default=None,
        description=(
            "Which source split is the pool and which the queries, e.g. {train: 'train', eval: "
            "'validation'}. None: the data must have one split (or none), which is divided: the "
            "queries first, then the pool."
        ),
    )
    label_names: dict[str, str] | None = Field(
        default=None,
        description=(
            "Words for label ids in the output column, e.g. {0: 'negative', 1: 'positive'}; "
            "every output must then be one of its ids. None: outputs are text (an HF "
            "ClassLabel column uses its own names)."
        ),
        max_length=10_000,
    )

    @field_validator("label_names", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        # YAML and Python give integer keys ({0: 'negative'}); JSON can only give strings.
        if not isinstance(value, dict):
            return value
        out = {}
        for key, word in value.items():
            text = label_id_key(key)
            out[key if text is None else text] = word
        return out

    @field_validator("label_names")
    @classmethod
    def _words_not_empty(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        empty = [k for k, v in (value or {}).items() if not v]
        if empty:
            raise ValueError(f"label_names gives label id {empty[0]!r} an empty word")
        return value


def label_id_key(value: Any) -> str | None:
    """The `label_names` key of a label id: ints (and integral floats) as decimal text, text
    as it is; None for anything else. `1`, `1.0` and `"1"` are the same id."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    return None


class FileDataset(_MappedDataset):
    """A data file: JSON (a list of items, or {split: [items]} as in Janapati & Ji), JSONL,
    CSV or Parquet, read from the worker's data roots or uploaded (`POST /v1/datasets`)."""

    source: Literal["file"] = Field(default="file", description="Dataset kind.")
    path: str | None = Field(
        default=None,
        description=(
            "Path of the file on the worker, under its data roots (REPRLAB_DATA_ROOTS); a "
            "relative path is looked up under each root. Give `path` or `upload`."
        ),
        min_length=1,
        max_length=4096,
    )
    upload: str | None = Field(
        default=None,
        description="Id of a file you uploaded (`client.datasets.upload(path)`).",
        pattern=UPLOAD_ID_PATTERN,
    )
    format: Literal["auto", "json", "jsonl", "csv", "parquet"] = Field(
        default="auto",
        description=(
            "'auto': from the file name's extension (.json, .jsonl/.ndjson, .csv, .parquet/.pq) "
            "or, for an upload, the format recorded at upload."
        ),
    )

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if (self.path is None) == (self.upload is None):
            raise ValueError("a file dataset needs exactly one of 'path' and 'upload'")
        if self.path is not None and self.format == "auto" and format_of(self.path) is None:
            known = ", ".join(FORMAT_BY_EXTENSION)
            raise ValueError(
                f"cannot tell the format of {self.path!r} from its extension (known: {known}); "
                "set dataset.format to one of json, jsonl, csv, parquet"
            )
        return self


class HFDataset(_MappedDataset):
    """A Hugging Face `datasets` dataset: a hub id read from the worker's HF cache (downloaded
    only where the worker allows hub downloads), or a `save_to_disk` directory."""

    source: Literal["hf"] = Field(default="hf", description="Dataset kind.")
    name: str | None = Field(
        default=None,
        description=(
            "Hub id 'org/name' (e.g. 'stanfordnlp/sst2'), read from the worker's Hugging Face "
            "cache; the hub is asked only where REPRLAB_HUB_DOWNLOADS is on. Give `name` or "
            "`path`."
        ),
        pattern=HUB_DATASET_PATTERN,
    )
    path: str | None = Field(
        default=None,
        description="A `save_to_disk` directory on the worker, under its data roots.",
        min_length=1,
        max_length=4096,
    )
    config: str | None = Field(
        default=None,
        description="Configuration (subset) name of a hub dataset, e.g. 'sst2' of 'nyu-mll/glue'.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    )
    revision: str | None = Field(
        default=None,
        description="Hub revision (branch, tag or commit) of a hub dataset.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$",
    )

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if (self.name is None) == (self.path is None):
            raise ValueError("an hf dataset needs exactly one of 'name' (hub id) and 'path'")
        if self.path is not None and (self.config or self.revision):
            raise ValueError("config and revision apply to a hub 'name', not to a 'path'")
        return self


class DatasetUpload(ResponseModel):
    """An uploaded dataset file, as `POST /v1/datasets` stored it."""

    id: str = Field(description="Upload id; a job names it as dataset.upload.")
    owner: str = Field(description="The user who uploaded it.")
    filename: str = Field(description="The file name given at upload.")
    format: DataFormat = Field(description="Data format: json, jsonl, csv or parquet.")
    size: int = Field(description="Size in bytes.")
    sha256: str = Field(description="sha256 of the content (hex).")
    created_at: datetime = Field(description="Upload time (UTC).")
