"""The artifact store: activations, plots and results under relative keys, on any fsspec URL.

Keys are relative POSIX paths such as `activations/<sha>.safetensors` or
`jobs/<id>/plots/id_twonn.png`. Writes are atomic (a temporary key, then a rename), so a reader
never sees half a file and a crashed writer leaves no artifact behind.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from typing import BinaryIO, cast

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
        ValueError: an empty or absolute key, a backslash, an empty, '.' or '..' segment, or a
            segment with characters outside `A-Za-z0-9_.-+=@`.
    """
    if not key or key.startswith("/") or "\\" in key:
        raise ValueError(
            f"invalid artifact key {key!r}: keys are relative POSIX paths like 'jobs/<id>/x.json'"
        )
    for part in key.split("/"):
        if part in ("", ".", "..") or not _SEGMENT.match(part):
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
            else:
                self._fs.pipe_file(tmp, data)
                self._fs.mv(tmp, path)
        finally:
            if self._fs.exists(tmp):
                self._fs.rm_file(tmp)
