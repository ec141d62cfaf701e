"""Uploaded dataset files in the artifact store: the content under its sha256, and one small
JSON record per (owner, content, format) saying whose it is.

- content: `datasets/<sha256>.<format>` (shared: the same bytes are stored once);
- record: `datasets/uploads/<id>.json`, a `DatasetUpload` (owner, filename, format, size, sha256).

The id is derived from owner, content and format, so uploading the same file again (a retry)
gives the same id instead of a second copy. No HTTP here: the API route (`routes/datasets.py`)
and the workers (which read the content) share these functions.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from pydantic import ValidationError

from reprlab.schemas.datasets import UPLOAD_ID_PATTERN, DataFormat, DatasetUpload
from reprlab.server.storage import ArtifactNotFound, ArtifactStore

_PREFIX = "datasets"


class UploadRefused(ValueError):
    """The bytes are not a file of the format they claim (e.g. a CSV that is not UTF-8)."""


def content_key(sha256: str, fmt: DataFormat) -> str:
    """Store key of an uploaded file's content."""
    return f"{_PREFIX}/{sha256}.{fmt}"


def record_key(upload_id: str) -> str:
    """Store key of an upload's JSON record."""
    return f"{_PREFIX}/uploads/{upload_id}.json"


def upload_id(owner: str, sha256: str, fmt: DataFormat) -> str:
    """The id of `owner`'s upload of this content in this format (stable across retries)."""
    return hashlib.sha256(f"{owner}\n{sha256}\n{fmt}".encode()).hexdigest()[:32]


def check_content(data: bytes, fmt: DataFormat) -> None:
    """Refuse bytes that cannot be a file of `fmt`: empty, a text format that is not UTF-8, a
    Parquet file without its magic bytes. Parsing is the worker's (it names rows and columns).

    Raises:
        UploadRefused: saying what is wrong.
    """
    if not data:
        raise UploadRefused("the upload is empty")
    if fmt == "parquet":
        if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
            raise UploadRefused("the upload is not a Parquet file (no PAR1 magic bytes)")
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UploadRefused(f"a {fmt} upload must be UTF-8 text: {exc}") from None


def save_upload(
    store: ArtifactStore, data: bytes, *, owner: str, filename: str, fmt: DataFormat
) -> DatasetUpload:
    """Store the content (once) and the owner's record; returns the record."""
    check_content(data, fmt)
    sha256 = hashlib.sha256(data).hexdigest()
    key = content_key(sha256, fmt)
    if not store.exists(key):
        store.put_bytes(key, data)
    record = DatasetUpload(
        id=upload_id(owner, sha256, fmt), owner=owner, filename=filename, format=fmt,
        size=len(data), sha256=sha256, created_at=datetime.now(UTC),
    )  # fmt: skip
    store.put_bytes(record_key(record.id), record.model_dump_json().encode())
    return record


def read_record(store: ArtifactStore, upload_id: str) -> DatasetUpload | None:
    """The upload's record, or None if there is none (or the id is malformed)."""
    if not re.fullmatch(UPLOAD_ID_PATTERN, upload_id):
        return None
    try:
        return DatasetUpload.model_validate_json(store.get_bytes(record_key(upload_id)))
    except (ArtifactNotFound, ValidationError):
        return None
