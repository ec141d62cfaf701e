"""The artifact store: activations, plots and results under relative keys, on any fsspec URL.

Writes are atomic (a temporary key, then a rename), so a reader never sees half a file and a
crashed writer leaves no artifact behind.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from typing import BinaryIO, cast

import fsspec
from fsspec.core import url_to_fs

_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-+=@]+$")


class ArtifactNotFound(KeyError):
    """No artifact under this key."""


def check_key(key: str) -> str:
    """A safe relative POSIX key; ValueError for absolute keys, '..', backslashes, empties."""
    if not key or key.startswith("/") or "\\" in key:
        raise ValueError(f"invalid artifact key {key!r}: keys are relative POSIX paths")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _SEGMENT.match(part):
            raise ValueError(f"invalid artifact key {key!r}: bad segment {part!r}")
    return key


class ArtifactStore:
    """Bytes under keys, rooted at a directory or fsspec URL (file://, memory://, s3://...)."""

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
        return bool(self._fs.exists(self._path(key)))

    def size(self, key: str) -> int:
        try:
            return int(self._fs.size(self._path(key)))
        except FileNotFoundError:
            raise ArtifactNotFound(key) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return cast(bytes, self._fs.cat_file(self._path(key)))
        except FileNotFoundError:
            raise ArtifactNotFound(key) from None

    def open(self, key: str) -> BinaryIO:
        try:
            return cast(BinaryIO, self._fs.open(self._path(key), "rb"))
        except FileNotFoundError:
            raise ArtifactNotFound(key) from None

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` under `key` atomically (replacing any previous content)."""
        path = self._path(key)
        parent = posixpath.dirname(path)
        tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
        self._fs.makedirs(parent, exist_ok=True)
        try:
            self._fs.pipe_file(tmp, data)
            self._fs.mv(tmp, path)
        finally:
            if self._fs.exists(tmp):
                self._fs.rm_file(tmp)
