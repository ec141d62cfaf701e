"""Real datasets: file readers (JSON with splits, JSONL, CSV, Parquet), field / split / label
mapping, order, and every refusal (Hugging Face datasets: test_dataset_hub.py).

Every file is written by the test; nothing is downloaded (the hub is offline for the tests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from reprlab.schemas.datasets import FileDataset, HFDataset
from reprlab.schemas.specs import JobSpec
from reprlab.worker.data import Dataset, load_dataset
from reprlab.worker.errors import DataError

QUESTION = " \nQuestion: Was that sentence positive or negative? Answer:"
# (sentence, label id, split) in file order: a repeated sentence in validation, and one
# sentence in both splits.
ROWS = [
    ("The soup was cold.", 0, "train"),
    ("A wonderful evening.", 1, "train"),
    ("Shared by both splits.", 1, "train"),
    ("Dull and slow.", 0, "train"),
    ("Loved every minute.", 1, "validation"),
    ("Shared by both splits.", 1, "validation"),
    ("Never again.", 0, "validation"),
    ("Loved every minute.", 1, "validation"),
    ("Quite fine.", 1, "validation"),
]
WORDS = {0: "negative", 1: "positive"}
MAPPED: dict[str, Any] = {
    "fields": {"input": "sentence", "output": "label", "split": "part", "labels": ["topic"]},
    "splits": {"train": "train", "eval": "validation"},
    "label_names": WORDS,
}


def _split(name: str) -> list[tuple[str, int, str]]:
    return [r for r in ROWS if r[2] == name]


def _janapati(sentence: str, label: int) -> dict[str, str]:
    text = sentence + QUESTION
    return {"input": text, "output": WORDS[label], "combined": f"{text}\n{WORDS[label]}"}


def _records() -> list[dict[str, Any]]:
    return [{"sentence": s, "label": y, "part": p, "topic": f"t{i % 3}"}
            for i, (s, y, p) in enumerate(ROWS)]  # fmt: skip


def _write(root: Path, fmt: str) -> str:
    """The ROWS in one format (flat tables carry the split in column 'part')."""
    records = _records()
    if fmt == "jsonl":
        (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n\n" for r in records))
    elif fmt == "csv":
        pd.DataFrame(records).to_csv(root / "d.csv", index=False)
    elif fmt == "parquet":
        pd.DataFrame(records).to_parquet(root / "d.parquet")
    elif fmt == "json":
        splits = {p: [r for r in records if r["part"] == p] for p in ("train", "validation")}
        (root / "d.json").write_text(json.dumps(splits))
    return f"d.{fmt}"


def _file(root: Path, **spec: Any) -> Dataset:
    return load_dataset(FileDataset.model_validate(spec), data_roots=[root])


def _error(root: Path, *words: str, **spec: Any) -> DataError:
    with pytest.raises(DataError) as exc:
        _file(root, **spec)
    for word in words:
        assert word in exc.value.message, (word, exc.value.message)
    assert exc.value.hint
    return exc.value


def test_janapati_and_ji_json_loads_every_item_in_file_order(tmp_path: Path) -> None:
    train = [_janapati(s, y) for s, y, _ in _split("train")]
    validation = [_janapati(s, y) for s, y, _ in _split("validation")]
    (tmp_path / "sst2.json").write_text(json.dumps({"train": train, "validation": validation}))
    d = _file(tmp_path, path="sst2.json", n_eval=len(validation), n_train=len(train),
              splits={"train": "train", "eval": "validation"})  # fmt: skip
    assert [e.input for e in d.eval] == [v["input"] for v in validation]  # repeats kept
    assert [e.input for e in d.train] == [t["input"] for t in train]
    assert len({e.input for e in d.eval}) == len(validation) - 1
    assert {e.input for e in d.eval} & {e.input for e in d.train}  # one input in both splits
    assert [e.output for e in d.eval] == [v["output"] for v in validation]
    assert d.eval[0].labels == {"combined": validation[0]["combined"]}
    assert d.eval[0].input.endswith("Answer:") and d.options == ["negative", "positive"]
    assert (d.template, d.target_delimiter, d.name) == ("plain", "\n", "sst2.json")


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "parquet"])
def test_every_format_gives_the_same_items_in_file_order(tmp_path: Path, fmt: str) -> None:
    d = _file(tmp_path, path=_write(tmp_path, fmt), n_eval=5, n_train=4, **MAPPED)
    assert [(e.input, e.output) for e in d.eval] == [(s, WORDS[y]) for s, y, _ in
                                                    _split("validation")]  # fmt: skip
    assert [(e.input, e.output) for e in d.train] == [(s, WORDS[y]) for s, y, _ in
                                                     _split("train")]  # fmt: skip
    assert [e.labels for e in d.train] == [{"topic": f"t{i % 3}"} for i in range(4)]
    assert d.options == ["negative", "positive"]


def test_first_n_in_file_order_unless_a_sample_seed_is_set(tmp_path: Path) -> None:
    rows = [{"input": f"sentence {i}", "output": "yes" if i % 2 else "no"} for i in range(60)]
    (tmp_path / "many.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    first = _file(tmp_path, path="many.jsonl", n_eval=10, n_train=5)
    assert [e.input for e in first.eval] == [f"sentence {i}" for i in range(10)]
    assert [e.input for e in first.train] == [f"sentence {i}" for i in range(10, 15)]
    sampled = _file(tmp_path, path="many.jsonl", n_eval=10, n_train=5, sample_seed=7)
    again = _file(tmp_path, path="many.jsonl", n_eval=10, n_train=5, sample_seed=7)
    other = _file(tmp_path, path="many.jsonl", n_eval=10, n_train=5, sample_seed=8)
    index = [int(e.input.split()[1]) for e in sampled.eval]
    assert sampled == again and index == sorted(index) and index != list(range(10))
    assert [e.input for e in other.eval] != [e.input for e in sampled.eval]
    pool = {e.input for e in sampled.train}
    assert len(pool) == 5 and not pool & {e.input for e in sampled.eval}  # disjoint
    bigger = _file(tmp_path, path="many.jsonl", n_eval=10, n_train=20, sample_seed=7)
    assert bigger.eval == sampled.eval  # the queries do not depend on the pool size


def test_one_split_is_divided_and_the_same_split_may_serve_both(tmp_path: Path) -> None:
    data = {"test": [{"input": f"q{i}", "output": "a"} for i in range(6)]}
    (tmp_path / "one.json").write_text(json.dumps(data))
    d = _file(tmp_path, path="one.json", n_eval=4, n_train=2)
    assert [e.input for e in d.eval] == ["q0", "q1", "q2", "q3"]
    assert [e.input for e in d.train] == ["q4", "q5"]
    same = _file(tmp_path, path="one.json", n_eval=4, n_train=2,
                 splits={"train": "test", "eval": "test"})  # fmt: skip
    assert same == d


def test_labels_list_dict_and_automatic_and_typed_csv_columns(tmp_path: Path) -> None:
    lines = [{"input": "a", "output": "x", "labels": {"subject": "math"}, "level": 2,
              "tags": ["t"], "spans": {"relevant": [0, 1]}}]  # fmt: skip
    (tmp_path / "l.jsonl").write_text(json.dumps(lines[0]))
    auto = _file(tmp_path, path="l.jsonl", n_eval=1, n_train=0)
    assert auto.eval[0].labels == {"subject": "math", "level": 2}  # a list is no label
    assert auto.eval[0].spans == {"relevant": (0, 1)}
    (tmp_path / "t.csv").write_text("text,gold,weight,name\n7,11,1.5,x\n8,12,2,y\n")
    d = _file(tmp_path, path="t.csv", n_eval=2, n_train=0,
              fields={"input": "text", "output": "gold", "labels": {"w": "weight"}})  # fmt: skip
    assert [(e.input, e.output, e.labels) for e in d.eval] == [
        ("7", "11", {"w": 1.5}), ("8", "12", {"w": 2.0})]  # fmt: skip
    none = _file(tmp_path, path="t.csv", n_eval=2, n_train=0,
                 fields={"input": "text", "output": "gold", "labels": []})  # fmt: skip
    assert none.eval[0].labels == {}


def test_label_ids_become_words_and_an_unknown_id_is_named(tmp_path: Path) -> None:
    (tmp_path / "ids.csv").write_text("sentence,label\ngood,1\nbad,0\nodd,2\n")
    fields = {"input": "sentence", "output": "label"}
    d = _file(tmp_path, path="ids.csv", n_eval=2, n_train=0, fields=fields,
              label_names={"0": "negative", "1": "positive"})  # fmt: skip
    assert [e.output for e in d.eval] == ["positive", "negative"]
    _error(tmp_path, "data row 3", "label id '2'", "'label'", "label_names", path="ids.csv",
           n_eval=3, n_train=0, fields=fields, label_names=WORDS)  # fmt: skip
    pd.DataFrame({"sentence": ["good"], "label": [1]}).to_parquet(tmp_path / "ids.parquet")
    err = _error(tmp_path, "ids.parquet, row 0", "must be text, got int 1", path="ids.parquet",
                 n_eval=1, n_train=0, fields=fields)  # fmt: skip
    assert "label_names" in str(err.hint)  # integer outputs: say how to name them


def test_missing_columns_name_the_column_and_those_present(tmp_path: Path) -> None:
    path = _write(tmp_path, "csv")
    _error(
        tmp_path,
        "d.csv has no column 'text'",
        "'sentence', 'label', 'part', 'topic'",
        path=path,
        n_eval=1,
        n_train=0,
        fields={"input": "text", "output": "label"},
    )
    _error(tmp_path, "no column 'grade'", path=path, n_eval=1, n_train=0,
           fields={"input": "sentence", "output": "label", "labels": ["grade"]},
           label_names=WORDS)  # fmt: skip
    (tmp_path / "r.json").write_text(json.dumps([{"input": "a", "output": "b"}, {"input": "c"}]))
    _error(tmp_path, "r.json, item 1: no field 'output'", "the row has 'input'", path="r.json",
           n_eval=2, n_train=0)  # fmt: skip


def test_wrong_types_name_the_row_and_the_value(tmp_path: Path) -> None:
    (tmp_path / "w.jsonl").write_text(
        '{"input": "a", "output": "b"}\n\n{"input": 5, "output": "c"}\n'
    )
    _error(tmp_path, "w.jsonl, line 3", "'input'", "must be text, got int 5", path="w.jsonl",
           n_eval=2, n_train=0)  # fmt: skip
    (tmp_path / "e.jsonl").write_text('{"input": "", "output": "b"}\n')
    _error(tmp_path, "line 1", "is empty", path="e.jsonl", n_eval=1, n_train=0)
    (tmp_path / "s.jsonl").write_text('{"input": "ab", "output": "b", "spans": {"r": [0, 9]}}\n')
    _error(tmp_path, "line 1", "spans", path="s.jsonl", n_eval=1, n_train=0)
    (tmp_path / "lab.jsonl").write_text('{"input": "ab", "output": "b", "g": {"x": 1}}\n')
    _error(tmp_path, "label field 'g' must be a string or a number, got dict", path="lab.jsonl",
           n_eval=1, n_train=0, fields={"labels": ["g"]})  # fmt: skip


def test_unknown_split_keys_and_values_name_those_present(tmp_path: Path) -> None:
    json_path = _write(tmp_path, "json")
    fields = {"input": "sentence", "output": "label"}
    _error(tmp_path, "dataset.splits.eval is 'test'", "'train', 'validation'", path=json_path,
           n_eval=1, n_train=1, fields=fields, label_names=WORDS,
           splits={"train": "train", "eval": "test"})  # fmt: skip
    _error(tmp_path, "has the splits 'train', 'validation'", path=json_path, n_eval=1,
           n_train=1, fields=fields, label_names=WORDS)  # fmt: skip
    csv_path = _write(tmp_path, "csv")
    _error(
        tmp_path,
        "no column 'split'",
        "'part'",
        path=csv_path,
        n_eval=1,
        n_train=1,
        fields=fields,
        label_names=WORDS,
        splits={"train": "train", "eval": "validation"},
    )
    _error(tmp_path, "no row of d.csv has that value", "'train', 'validation'", path=csv_path,
           n_eval=1, n_train=1, label_names=WORDS, splits={"train": "train", "eval": "dev"},
           fields={**fields, "split": "part"})  # fmt: skip
    _error(tmp_path, "has 5 rows for the eval split", "dataset.n_eval = 6", path=csv_path,
           n_eval=6, n_train=1, label_names=WORDS, fields={**fields, "split": "part"},
           splits={"train": "train", "eval": "validation"})  # fmt: skip


def test_files_outside_the_roots_and_unknown_formats_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "x.jsonl").write_text('{"input": "a", "output": "b"}\n')
    for path in (str(outside / "x.jsonl"), "../outside/x.jsonl"):
        _error(root, path=path, n_eval=1, n_train=0)
    _error(root, "does not exist", path="nope.csv", n_eval=1, n_train=0)
    with pytest.raises(ValidationError, match="cannot tell the format of 'x.txt'"):
        FileDataset(path="x.txt")
    (root / "x.txt").write_text("input,output\na,b\n")
    assert _file(root, path="x.txt", format="csv", n_eval=1, n_train=0).eval[0].output == "b"
    with pytest.raises(ValidationError, match="exactly one of 'path' and 'upload'"):
        FileDataset()


def test_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"train": [')
    _error(tmp_path, "bad.json is not valid JSON", path="bad.json", n_eval=1, n_train=0)
    (tmp_path / "str.json").write_text('{"train": "nope"}')
    _error(tmp_path, "split 'train' is str", path="str.json", n_eval=1, n_train=0)
    (tmp_path / "bad.jsonl").write_text('{"input": "a", "output": "b"}\n[1]\n')
    _error(tmp_path, "bad.jsonl, line 2: expected a JSON object", path="bad.jsonl", n_eval=1,
           n_train=0)  # fmt: skip
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    _error(tmp_path, "not a readable Parquet file", path="bad.parquet", n_eval=1, n_train=0)
    (tmp_path / "latin.csv").write_bytes("input,output\ncaf\xe9,b\n".encode("latin-1"))
    _error(tmp_path, "latin.csv", path="latin.csv", n_eval=1, n_train=0)
    (tmp_path / "empty.csv").write_text("")
    _error(tmp_path, "empty.csv is empty", path="empty.csv", n_eval=1, n_train=0)


def test_file_and_hf_specs_in_a_job_spec() -> None:
    base = {"model": {"name": "tiny"}, "conditions": [{"name": "zs"}]}
    spec = JobSpec.model_validate({**base, "dataset": {"source": "file", "path": "a.parquet",
                                                       "label_names": {0: "no"}}})  # fmt: skip
    assert isinstance(spec.dataset, FileDataset) and spec.dataset.label_names == {"0": "no"}
    with pytest.raises(ValidationError, match="'builtin', 'inline', 'jsonl', 'file', 'hf'"):
        JobSpec.model_validate({**base, "dataset": {"source": "csv"}})
    with pytest.raises(ValidationError, match="config and revision apply to a hub 'name'"):
        HFDataset(path="d", config="x")
    with pytest.raises(ValidationError, match="empty word"):
        FileDataset(path="a.csv", label_names={"0": ""})
