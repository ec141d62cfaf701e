"""Paths a job may name: under a configured root, symlinks resolved, no `..` component.

One function for the API server (refusing a job at submission) and the worker (before it
reads anything): JSONL datasets under `data_roots`, local model directories under
`model_roots`. Only `pathlib` is used, so the server checks without importing the worker.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class PathNotAllowed(ValueError):
    """A path outside the allowed roots, or with a `..` component."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def resolve_under_roots(
    raw: str, roots: Sequence[Path], *, what: str, kind: str, setting: str, search_roots: bool
) -> Path:
    """The resolved `raw` (symlinks followed) if it lies under one of `roots`.

    Args:
        raw: The path as written in the spec; `~` is expanded.
        roots: The allowed directories.
        what: Names the path in messages, e.g. "dataset path", "model directory".
        kind: Names the roots in messages, e.g. "data", "model".
        setting: The setting that lists the roots, e.g. "REPRLAB_DATA_ROOTS".
        search_roots: A relative path is looked up under each root in order (the first root
            that has it wins, else the first root); otherwise it is relative to the current
            directory.

    Raises:
        PathNotAllowed: a `..` component (a path could walk out of a root), a resolved path
            outside every root (also through a symlink), or a path that cannot be resolved
            (symlink loop, unknown `~user`, a name too long).
    """
    resolved_roots = [Path(r).expanduser().resolve() for r in roots]
    allowed = ", ".join(map(str, resolved_roots)) or f"none configured ({setting})"
    try:
        path = Path(raw).expanduser()
    except RuntimeError as exc:  # '~user' of an unknown user
        raise PathNotAllowed(f"{what} {raw!r} cannot be expanded: {exc}",
                             hint="give an absolute path") from None  # fmt: skip
    if ".." in path.parts:
        raise PathNotAllowed(
            f"{what} {raw!r} contains '..', which could lead outside the worker's {kind} "
            f"roots ({setting}: {allowed})",
            hint="give the path without '..' components",
        )
    if search_roots and not path.is_absolute() and resolved_roots:
        candidates = [root / path for root in resolved_roots]
        path = next((c for c in candidates if os.path.exists(c)), candidates[0])
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long, ...
        raise PathNotAllowed(f"{what} {raw!r} cannot be resolved: {exc}",
                             hint="check the path and its symlinks") from None  # fmt: skip
    if not any(resolved.is_relative_to(root) for root in resolved_roots):
        raise PathNotAllowed(
            f"{what} {raw} (resolved to {resolved}) is outside the worker's {kind} roots "
            f"({setting}: {allowed})",
            hint=f"put it under one of: {allowed} (symlinks are followed, so the target itself "
            f"must be there), or ask the admin to add a root ({setting})",
        )
    return resolved
