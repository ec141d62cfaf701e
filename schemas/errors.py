"""Validation errors as messages that name each field (shared by the API and the CLI)."""

from __future__ import annotations

from typing import Any


def _location(loc: tuple[Any, ...], body: Any, *, missing: bool) -> str:
    """`('body', 'conditions', 0, 'k')` -> `conditions.0.k`; query/path/header keep their kind.

    Pydantic puts the tag of a discriminated union into the location (`dataset.builtin.bogus`);
    walking the request body alongside drops those segments, since a tag is never a key of the
    object it is read from (the last segment of a "missing" error is the absent field itself).
    """
    parts = list(loc)
    if not parts or parts[0] != "body":
        return ".".join(str(p) for p in parts)
    shown: list[str] = []
    node = body
    for i, part in enumerate(parts[1:], start=1):
        is_last = i == len(parts) - 1
        if isinstance(node, dict) and isinstance(part, str) and part not in node:
            if not (is_last and missing):
                continue  # a union tag, not a field
        shown.append(str(part))
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return ".".join(shown) or "body"


def _problem(err: dict[str, Any], body: Any) -> str:
    kind = err.get("type")
    loc = tuple(err.get("loc", ()))
    if kind == "json_invalid":
        detail = (err.get("ctx") or {}).get("error", "invalid JSON")
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return f"body: malformed JSON{where}: {detail}; send a JSON object"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        msg = "unknown field (not part of the spec; check its spelling)"
    elif kind == "missing":
        msg = "required field is missing"
    return f"{_location(loc, body, missing=kind == 'missing')}: {msg}"


def validation_message(errors: list[dict[str, Any]], body: Any = None) -> str:
    """Each problem as `<dotted.location>: <what is wrong>`, joined by '; '."""
    return "; ".join(_problem(err, body) for err in errors) or "invalid request"


def spec_problems(errors: list[dict[str, Any]], spec: Any) -> str:
    """`validation_message` for errors of validating `spec` itself (not a request body)."""
    return validation_message([{**e, "loc": ("body", *e.get("loc", ()))} for e in errors], spec)
