"""The artifact store: activations, plots and results under relative keys, on any fsspec URL.

Keys are relative POSIX paths such as `activations/<sha>.safetensors` or
`jobs/<id>/plots/id_twonn.png`. Writes are atomic (a temporary key, then a rename), so a reader
never sees half a file and a crashed writer leaves no artifact behind. A writer killed mid-write
leaves only its temporary file (`.tmp-<uuid>-<name>` beside the target): no key can name one, so
reads never see it, and `sweep_temp` removes those old enough to belong to a dead writer.
"""

from __future__ import annotations

import os
import posixpath
import re
import time
import uuid
from datetime import datetime
from typing import Any, BinaryIO, cast

import fsspec
from fsspec.core import url_to_fs

_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-+=@]+$")
_TMP_PREFIX = ".tmp-"


class ArtifactNotFound(KeyError):
    """No artifact under this key."""

    def __str__(self) -> str:
        return f"no artifact under key {self.args[0]!r}" if self.args else "no such artifact"


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative POSIX key.

    Raises:
        ValueError: an empty or absolute key, a backslash, an empty, '.' or '..' segment, a
            segment with characters outside `A-Za-z0-9_.-+=@`, or one naming a temporary file.
    """
    if not key or key.startswith("/") or "\\" in key:
        raise ValueError(
            f"invalid artifact key {key!r}: keys are relative POSIX paths like 'jobs/<id>/x.json'"
        )
    for part in key.split("/"):
        if part in ("", ".", "..") or not _SEGMENT.match(part) or part.startswith(_TMP_PREFIX):
            raise ValueError(f"invalid artifact key {key!r}: bad segment {part!r}")
    return key


class ArtifactStore:
    """Bytes under keys, rooted at a directory or an fsspec URL (file://, memory://, s3://...)."""

    def __init__(self, url: str) -> None:
        fs, root = url_to_fs(url)
        self.url = url
        self._fs: fsspec.AbstractFileSystem = fs
        self._root = root.rstrip("/")
        if self._is_local:
            self._fs.makedirs(self._root, exist_ok=True)

    @property
    def _is_local(self) -> bool:
        protocol = self._fs.protocol
        names = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        return "file" in names or "local" in names

    def _path(self, key: str) -> str:
        return posixpath.join(self._root, check_key(key))

    def exists(self, key: str) -> bool:
        """True if an artifact is stored under `key` (a directory of keys does not count)."""
        return bool(self._fs.isfile(self._path(key)))

    def size(self, key: str) -> int:
        """Size in bytes; `ArtifactNotFound` if missing."""
        path = self._path(key)
        if not self._fs.isfile(path):
            raise ArtifactNotFound(key)
        return int(self._fs.size(path))

    def get_bytes(self, key: str) -> bytes:
        """The whole artifact; `ArtifactNotFound` if missing."""
        path = self._path(key)
        try:
            return cast(bytes, self._fs.cat_file(path))
        except (FileNotFoundError, IsADirectoryError):
            raise ArtifactNotFound(key) from None

    def open(self, key: str) -> BinaryIO:
        """A binary file object for streaming reads; the caller closes it."""
        path = self._path(key)
        if not self._fs.isfile(path):
            raise ArtifactNotFound(key)
        return cast(BinaryIO, self._fs.open(path, "rb"))

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` under `key` atomically, replacing any previous content."""
        path = self._path(key)
        parent = posixpath.dirname(path)
        tmp = posixpath.join(parent, f"{_TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(path)}")
        self._fs.makedirs(parent, exist_ok=True)
        try:
            if self._is_local:
                with open(tmp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)  # atomic on POSIX, also when `path` exists
                _fsync_dir(parent)  # the rename itself survives a power cut
            else:
                self._fs.pipe_file(tmp, data)
                self._fs.mv(tmp, path)
        finally:
            if self._fs.exists(tmp):
                self._fs.rm_file(tmp)

    def sweep_temp(self, older_than_s: float, *, now: float | None = None) -> int:
        """Remove temporary files left by writers that died mid-write; returns how many.

        Only files older than `older_than_s` go (a live writer's file is young); a file whose
        age the filesystem does not report is kept.
        """
        now = time.time() if now is None else now
        removed = 0
        found = cast(dict[str, dict[str, Any]], self._fs.find(self._root, detail=True))
        for path, info in found.items():
            if not posixpath.basename(path).startswith(_TMP_PREFIX):
                continue
            modified = _modified(info)
            if modified is None or now - modified < older_than_s:
                continue
            try:
                self._fs.rm_file(path)
            except FileNotFoundError:  # its writer finished (renamed it) or another sweep won
                continue
            removed += 1
        return removed


def _modified(info: dict[str, Any]) -> float | None:
    """A file's modification time (UNIX seconds) from fsspec `info`, across filesystems."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
