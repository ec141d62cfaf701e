"""Turn a dataset spec into a `Dataset`: built-in generators, inline items, JSONL files, and
real data (files and uploads: `files.py`; Hugging Face datasets: `hub.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reprlab.schemas.datasets import FileDataset, HFDataset
from reprlab.schemas.jsonl import parse_jsonl
from reprlab.schemas.specs import BuiltinDataset, DatasetSpec, InlineDataset, Item, JsonlDataset
from reprlab.server.paths import PathNotAllowed, resolve_under_roots
from reprlab.server.storage import ArtifactStore
from reprlab.worker.data import linear_regression, mcq, reading_comprehension, sentiment
from reprlab.worker.data.base import BuiltinGenerator, Dataset, Example, generate_distinct, split
from reprlab.worker.data.files import read_file_source
from reprlab.worker.data.hub import read_hf_source
from reprlab.worker.data.mapping import build_dataset
from reprlab.worker.errors import DataError, SpecError

MAX_FILE_BYTES = 512 * 1024 * 1024


def load_dataset(
    spec: DatasetSpec, *, data_roots: Sequence[Path] = (), store: ArtifactStore | None = None,
    hub_downloads: bool = False,
) -> Dataset:  # fmt: skip
    """The dataset a spec describes (deterministic given its seed).

    Args:
        store: where uploaded files (`source: file` with `upload`) are read from.
        hub_downloads: let `source: hf` ask the Hugging Face hub (else its cache only).

    Raises:
        DataError: a file outside the data roots, unreadable or malformed, or too few items.
        SpecError: a negative seed.
    """
    if isinstance(spec, FileDataset):
        name, source = read_file_source(spec, data_roots=data_roots, store=store)
        return build_dataset(name, source, spec)
    if isinstance(spec, HFDataset):
        name, source = read_hf_source(spec, data_roots=data_roots, hub_downloads=hub_downloads)
        return build_dataset(name, source, spec)
    if spec.seed < 0:  # numpy seeds must be non-negative; the schema does not bound it
        raise SpecError(f"dataset.seed is {spec.seed}", hint="use a dataset.seed >= 0")
    if isinstance(spec, BuiltinDataset):
        return _builtin(spec)
    if isinstance(spec, InlineDataset):
        return _from_items("inline", spec.items, spec.splits, spec)
    return _jsonl(spec, data_roots)


BUILTINS: dict[str, BuiltinGenerator] = {
    "sentiment": sentiment.GENERATOR,
    "mcq": mcq.GENERATOR,
    "linear_regression": linear_regression.GENERATOR,
    "reading_comprehension": reading_comprehension.GENERATOR,
}


def _builtin(spec: BuiltinDataset) -> Dataset:
    gen = BUILTINS[spec.name]
    n = spec.n_eval + spec.n_train
    items = generate_distinct(spec.name, n, gen.capacity, spec.seed, gen.draw)
    # Queries first: the analysed items do not change when only the pool size changes.
    eval_, train = items[: spec.n_eval], items[spec.n_eval :]
    return Dataset(spec.name, train, eval_, gen.template, gen.target_delimiter, list(gen.options))


def _examples(items: Sequence[Item]) -> list[Example]:
    return [
        Example(
            it.input,
            it.output,
            dict(it.labels),
            {name: (span[0], span[1]) for name, span in it.spans.items()},
        )
        for it in items
    ]


def _from_items(
    name: str,
    items: Sequence[Item],
    splits: Sequence[str] | None,
    spec: InlineDataset | JsonlDataset,
) -> Dataset:
    examples = _examples(items)
    if splits is None:
        eval_, train = split(name, examples, spec.n_eval, spec.n_train, spec.seed)
    else:
        eval_ = [e for e, s in zip(examples, splits, strict=True) if s == "eval"]
        train = [e for e, s in zip(examples, splits, strict=True) if s == "train"]
        if len(eval_) < spec.n_eval or len(train) < spec.n_train:
            raise DataError(
                f"dataset '{name}' marks {len(eval_)} items 'eval' and {len(train)} 'train', but "
                f"the spec asks for n_eval={spec.n_eval} and n_train={spec.n_train}",
                hint="lower dataset.n_eval / dataset.n_train to at most the marked counts",
            )
        eval_, train = eval_[: spec.n_eval], train[: spec.n_train]
    outputs = sorted({e.output for e in examples})
    return Dataset(name, train, eval_, "plain", "\n", outputs if len(outputs) <= 20 else [])


def _jsonl(spec: JsonlDataset, data_roots: Sequence[Path]) -> Dataset:
    path = _allowed_path(spec.path, data_roots)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise DataError(f"dataset file {spec.path} {problem} (looked at {path})",
                        hint="check dataset.path")  # fmt: skip
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"dataset file {spec.path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
        items, splits = parse_jsonl(text, source=path.name)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name} is not UTF-8 text: {exc}") from None
    except ValueError as exc:
        raise DataError(str(exc), hint="fix the line named, or remove it") from None
    except OSError as exc:
        raise DataError(f"cannot read dataset file {spec.path}: {exc.strerror}") from None
    return _from_items(path.name, items, splits, spec)


def _allowed_path(raw: str, data_roots: Sequence[Path]) -> Path:
    """The resolved path if it lies under an allowed root (symlinks followed), else DataError.

    A relative path is looked up under each root in order (the first root that has it wins;
    if none has it, the first root is named in the "does not exist" error). The API server
    refuses the same paths at submission with the same function.
    """
    try:
        return resolve_under_roots(
            raw, data_roots, what="dataset path", kind="data", setting="REPRLAB_DATA_ROOTS",
            search_roots=True,
        )  # fmt: skip
    except PathNotAllowed as exc:
        raise DataError(
            exc.message, hint=f"{exc.hint}; or let the SDK upload it (inline)"
        ) from None
