"""Parse JSONL datasets: one object per line with "input", "output", optional labels and split.

Shared by the SDK (which inlines a user's local file into the spec) and the workers (which
read files under their data roots). Pure: a string in, validated items out.
"""

from __future__ import annotations

import json
from typing import Literal, cast

from pydantic import ValidationError

from reprlab.schemas.specs import Item

Split = Literal["train", "eval"]
_RESERVED = {"input", "output", "labels", "split", "spans"}


def parse_jsonl(
    text: str, *, source: str = "<jsonl>", max_items: int = 200_000
) -> tuple[list[Item], list[Split] | None]:
    """Items of a JSONL text and, if any line has a "split", the split of each item.

    Each line: {"input": str, "output": str, "labels"?: {name: scalar}, "split"?: "train"|"eval",
    "spans"?: {name: [start, end]}, <other scalar fields become labels>}. Blank lines are skipped.

    Raises:
        ValueError: "<source>, line N: <problem>" for the first bad line, or an empty file.
    """
    items: list[Item] = []
    splits: list[Split | None] = []
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(items) >= max_items:
            raise ValueError(f"{source}: more than {max_items} items; split the file")
        where = f"{source}, line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        for field in ("input", "output"):
            if not isinstance(obj.get(field), str) or not obj[field]:
                raise ValueError(f"{where}: needs a non-empty string field {field!r}")
        labels = obj.get("labels", {})
        if not isinstance(labels, dict):
            raise ValueError(f"{where}: 'labels' must be an object")
        labels = dict(labels)
        for key, value in obj.items():
            if key in _RESERVED:
                continue
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                labels[key] = value
            else:
                raise ValueError(f"{where}: field {key!r} must be a string or a number")
        split = obj.get("split")
        if split not in (None, "train", "eval"):
            raise ValueError(f"{where}: 'split' must be 'train' or 'eval', got {split!r}")
        try:
            spans = obj.get("spans", {})
            items.append(Item(input=obj["input"], output=obj["output"], labels=labels, spans=spans))
        except ValidationError as exc:
            problem = exc.errors()[0]
            loc = ".".join(str(p) for p in problem["loc"])
            raise ValueError(f"{where}: {loc}: {problem['msg']}") from None
        splits.append(cast(Split | None, split))
    if not items:
        raise ValueError(f"{source} has no items (every line is blank)")
    if all(s is None for s in splits):
        return items, None
    if any(s is None for s in splits):
        first = next(i for i, s in enumerate(splits) if s is None)
        raise ValueError(
            f"{source}: some lines have a 'split' and some do not (item {first + 1} has none); "
            "give every line a split or none"
        )
    return items, cast(list[Split], splits)
