"""Hugging Face `datasets`: a hub id read from the worker's HF cache, or a `save_to_disk`
directory under the data roots, as `Table`s (one per split, memory-mapped).

The hub is asked only when the worker allows it (`hub_downloads`, REPRLAB_HUB_DOWNLOADS);
otherwise `datasets` runs offline for the call, so a dataset that is not cached fails at once
with a DataError saying what to download, instead of waiting on a network that may be absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reprlab.schemas.datasets import HFDataset
from reprlab.worker.data.files import data_path
from reprlab.worker.data.mapping import Source
from reprlab.worker.data.tables import Row, Table
from reprlab.worker.errors import DataError


class HFTable(Table):
    """One split of a `datasets.Dataset`; rows are read only when asked for."""

    def __init__(self, label: str, ds: Any) -> None:
        from datasets import ClassLabel

        names = {col: list(f.names) for col, f in ds.features.items() if isinstance(f, ClassLabel)}
        super().__init__(label, ds.column_names, len(ds), uniform=True, class_names=names)
        self._ds = ds

    def rows(self, indices: Sequence[int]) -> list[Row]:
        rows: list[Row] = self._ds.select(list(indices)).to_list()
        return rows

    def column(self, name: str) -> list[Any]:
        return list(self._ds[name])


def read_hf_source(
    spec: HFDataset, *, data_roots: Sequence[Path], hub_downloads: bool
) -> tuple[str, Source]:
    """The dataset's name and its tables by split (a single Dataset: the key None)."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            "source 'hf' needs the `datasets` package on the worker",
            hint="install reprlab[worker] (it includes datasets)",
        ) from None
    if spec.path is not None:
        path = data_path(spec.path, data_roots, what="save_to_disk directory")
        loaded, name = _from_disk(datasets, path, spec.path), path.name
    else:
        loaded, name = _from_hub(datasets, spec, hub_downloads), _describe(spec)
    if isinstance(loaded, datasets.DatasetDict):
        return name, {
            split: HFTable(f"{name}, split {split!r}", ds) for split, ds in loaded.items()
        }
    if isinstance(loaded, datasets.Dataset):
        return name, {None: HFTable(name, loaded)}
    raise DataError(
        f"{name} loaded as {type(loaded).__name__}, not a Dataset or DatasetDict",
        hint="save it with Dataset.save_to_disk or DatasetDict.save_to_disk",
    )


def _from_disk(datasets: Any, path: Path, raw: str) -> Any:
    if not path.is_dir():
        problem = "is not a directory" if path.exists() else "does not exist"
        raise DataError(f"save_to_disk directory {raw} {problem} (looked at {path})",
                        hint="check dataset.path")  # fmt: skip
    try:
        return datasets.load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{raw} is not a directory written by save_to_disk: {exc}",
            hint="write it with `Dataset.save_to_disk(DIR)` / `DatasetDict.save_to_disk(DIR)`",
        ) from None


def _from_hub(datasets: Any, spec: HFDataset, hub_downloads: bool) -> Any:
    name = spec.name or ""
    if os.path.exists(name):  # `datasets` would read a local folder of that name instead
        raise DataError(f"dataset.name {name!r} is also a local path on the worker",
                        hint="give a save_to_disk directory as dataset.path")  # fmt: skip
    try:
        with _hub_access(hub_downloads):
            return datasets.load_dataset(name, spec.config, revision=spec.revision)
    except (OSError, ValueError) as exc:  # ConnectionError, FileNotFoundError: not cached
        if hub_downloads:
            raise DataError(f"cannot load Hugging Face dataset {_describe(spec)}: {exc}",
                            hint="check dataset.name, config and revision") from None  # fmt: skip
        raise DataError(
            f"Hugging Face dataset {_describe(spec)} is not in this worker's cache, and hub "
            f"downloads are off (REPRLAB_HUB_DOWNLOADS); {exc}",
            hint=f"download it where the hub is reachable ({_save_command(spec)}), copy DIR "
            "under the worker's data roots and use {source: hf, path: DIR}; or fill the "
            "worker's Hugging Face cache (HF_HOME); or ask the admin to set "
            "REPRLAB_HUB_DOWNLOADS=true",
        ) from None


@contextmanager
def _hub_access(allowed: bool) -> Iterator[None]:
    """Run `datasets` offline unless hub downloads are allowed (both libraries read their
    offline flag from module state at call time)."""
    if allowed:
        yield
        return
    import huggingface_hub.constants as hub_constants
    from datasets import config

    saved = config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _describe(spec: HFDataset) -> str:
    config = f" (config {spec.config!r})" if spec.config else ""
    revision = f" at revision {spec.revision!r}" if spec.revision else ""
    return f"{spec.name!r}{config}{revision}"


def _save_command(spec: HFDataset) -> str:
    args = ", ".join([repr(spec.name), *([repr(spec.config)] if spec.config else []),
                      *([f"revision={spec.revision!r}"] if spec.revision else [])])  # fmt: skip
    return f"python -c \"import datasets; datasets.load_dataset({args}).save_to_disk('DIR')\""
