"""Hugging Face datasets (`source: hf`): save_to_disk directories the tests write, the same
mapping as files, ClassLabel names, and the refusals (outside the roots, not saved, not
cached while hub downloads are off). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reprlab.schemas.datasets import HFDataset
from reprlab.worker.data import load_dataset
from reprlab.worker.errors import DataError

WORDS = {0: "negative", 1: "positive"}
# (sentence, label id, split) in file order; a repeated sentence, one in both splits.
ROWS = [
    ("The soup was cold.", 0, "train"),
    ("Shared by both splits.", 1, "train"),
    ("Dull and slow.", 0, "train"),
    ("Loved every minute.", 1, "validation"),
    ("Shared by both splits.", 1, "validation"),
    ("Loved every minute.", 1, "validation"),
]
FIELDS = {"input": "sentence", "output": "label"}
SPLITS = {"train": "train", "eval": "validation"}


@pytest.fixture(autouse=True)
def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()


def _records() -> list[dict[str, Any]]:
    return [{"sentence": s, "label": y, "part": p, "topic": f"t{i % 3}"}
            for i, (s, y, p) in enumerate(ROWS)]  # fmt: skip


def _expected(split: str) -> list[tuple[str, str]]:
    return [(s, WORDS[y]) for s, y, p in ROWS if p == split]


def _save_to_disk(root: Path, *, flat: bool = False) -> str:
    """ROWS as a DatasetDict (train / validation, ClassLabel labels) or one flat Dataset."""
    import datasets

    features = datasets.Features({
        "sentence": datasets.Value("string"), "topic": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["negative", "positive"]),
        **({"part": datasets.Value("string")} if flat else {}),
    })  # fmt: skip

    def table(rows: list[dict[str, Any]]) -> Any:
        columns = {k: [r[k] for r in rows] for k in features}
        return datasets.Dataset.from_dict(columns, features=features)

    records = _records()
    if flat:
        table(records).save_to_disk(str(root / "flat_hf"))
        return "flat_hf"
    splits = {p: table([r for r in records if r["part"] == p]) for p in ("train", "validation")}
    datasets.DatasetDict(splits).save_to_disk(str(root / "sst2_hf"))
    return "sst2_hf"


def test_hf_save_to_disk_splits_and_class_label_names(tmp_path: Path) -> None:
    path = _save_to_disk(tmp_path)
    spec = HFDataset(path=path, n_eval=3, n_train=3, fields=FIELDS, splits=SPLITS)
    d = load_dataset(spec, data_roots=[tmp_path])  # no label_names: the ClassLabel's names
    assert [(e.input, e.output) for e in d.eval] == _expected("validation")  # repeats kept
    assert [(e.input, e.output) for e in d.train] == _expected("train")
    assert d.eval[0].labels == {"topic": "t0"} and d.options == ["negative", "positive"]
    assert d.name == "sst2_hf"
    wrong = HFDataset(path=path, splits={"train": "train", "eval": "test"})
    with pytest.raises(DataError, match="dataset.splits.eval is 'test'") as exc:
        load_dataset(wrong, data_roots=[tmp_path])
    assert "'train', 'validation'" in exc.value.message


def test_hf_refusals_outside_roots_not_saved_and_not_cached(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    _save_to_disk(tmp_path)
    with pytest.raises(DataError):
        load_dataset(HFDataset(path=str(tmp_path / "sst2_hf")), data_roots=[root])
    (root / "plain").mkdir()
    with pytest.raises(DataError, match="not a directory written by save_to_disk"):
        load_dataset(HFDataset(path="plain"), data_roots=[root])
    spec = HFDataset(name="reprlab-tests/never-cached", config="main", revision="v1")
    with pytest.raises(DataError) as exc:
        load_dataset(spec, data_roots=[root], hub_downloads=False)
    assert "'reprlab-tests/never-cached' (config 'main') at revision 'v1'" in exc.value.message
    assert "not in this worker's cache" in exc.value.message
    assert "load_dataset('reprlab-tests/never-cached', 'main', revision='v1')" in str(
        exc.value.hint)  # fmt: skip
    assert "REPRLAB_HUB_DOWNLOADS" in str(exc.value.hint)


def test_a_flat_dataset_is_split_by_its_split_column(tmp_path: Path) -> None:
    spec = HFDataset(path=_save_to_disk(tmp_path, flat=True), n_eval=3, n_train=3,
                     fields={**FIELDS, "split": "part"}, splits=SPLITS)  # fmt: skip
    d = load_dataset(spec, data_roots=[tmp_path])
    assert [(e.input, e.output) for e in d.eval] == _expected("validation")
    assert [(e.input, e.output) for e in d.train] == _expected("train")
    assert [e.labels for e in d.train] == [{"topic": f"t{i}"} for i in range(3)]
