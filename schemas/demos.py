"""Parse a study's published demonstration draws: `{"<query index>": [train indices], ...}`.

Janapati & Ji published one such JSON file per k (`icl_indices_<k>_shot.json`). Shared by the
SDK (which inlines a local file into the condition's `demos`) and the workers (which read a
`demos_file` under their data roots). Pure: a string in, one list of indices per query out.
"""

from __future__ import annotations

import json


def parse_demos_file(text: str, *, source: str = "<demos>") -> list[list[int]]:
    """Per query index 0..n-1, its training-pool indices in prompt order.

    Accepts an object keyed by query index (as a string or number) or a list of lists.

    Raises:
        ValueError: not JSON, a key that is not a query index, a missing query index, or a
            row that is not a list of non-negative integers; the message names the query.
    """
    try:
        data = json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, list):
        rows = dict(enumerate(data))
    elif isinstance(data, dict):
        rows = {}
        for key, row in data.items():
            try:
                index = int(key)
            except ValueError:
                raise ValueError(f"{source}: key {key!r} is not a query index") from None
            if index < 0:
                raise ValueError(f"{source}: key {key!r} is not a query index")
            rows[index] = row
    else:
        raise ValueError(f"{source}: expected an object of query index -> [train indices]")
    out = []
    for i in range(len(rows)):
        if i not in rows:
            raise ValueError(f"{source}: query {i} has no entry (the indices must be 0..n-1)")
        row = rows[i]
        if not isinstance(row, list) or any(
            not isinstance(j, int) or isinstance(j, bool) or j < 0 for j in row
        ):
            raise ValueError(f"{source}: query {i} must map to a list of training indices")
        out.append(row)
    return out
