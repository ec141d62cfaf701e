"""Dataset uploads: `POST /v1/datasets` stores a file, `GET /v1/datasets/{id}` its record.

A job then names the upload (`{"source": "file", "upload": "<id>"}`); `check_spec_upload`
refuses, at submission, an id that is not the caller's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from reprlab.schemas.datasets import (
    FORMAT_BY_EXTENSION,
    FORMATS,
    UPLOAD_ID_PATTERN,
    DataFormat,
    DatasetUpload,
    FileDataset,
    format_of,
)
from reprlab.schemas.specs import JobSpec
from reprlab.server import dataset_uploads, users
from reprlab.server.deps import SessionDep, SettingsDep, StoreDep, UserDep
from reprlab.server.errors import AUTHENTICATED_ERRORS, APIError, error_responses
from reprlab.server.storage import ArtifactStore
from reprlab.server.users import Caller

router = APIRouter(
    prefix="/datasets", tags=["datasets"], responses=error_responses(*AUTHENTICATED_ERRORS)
)

UploadId = Annotated[str, Path(description="Upload id (32 hex digits).", pattern=UPLOAD_ID_PATTERN)]
UPLOAD_HINT = (
    "upload the file with `reprlab datasets upload PATH` (SDK: `client.datasets.upload(path)`) "
    "and put the id it returns in dataset.upload"
)
_BINARY_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes, as they are (no form encoding).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "",
    response_model=DatasetUpload,
    status_code=status.HTTP_201_CREATED,
    summary="Upload a dataset file",
    responses=error_responses(413, 415),
    openapi_extra=_BINARY_BODY,
)
async def upload_dataset(
    request: Request,
    store: StoreDep,
    session: SessionDep,
    user: UserDep,
    settings: SettingsDep,
    filename: Annotated[
        str,
        Query(
            description="The file's name; its extension gives the format unless `format` is "
            "given (.json, .jsonl/.ndjson, .csv, .parquet/.pq).",
            min_length=1,
            max_length=255,
            pattern=r"^[^/\\\x00-\x1f\x7f]+$",
        ),
    ],  # fmt: skip
    format: Annotated[
        DataFormat | None, Query(description="json, jsonl, csv or parquet; default: by name.")
    ] = None,
) -> DatasetUpload:
    """Store the request body (the raw file) in the artifact store and return its record.

    Over `max_upload_bytes`: 413. A name whose extension is no known format (and no `format`):
    415. Empty, not UTF-8 (JSON, JSONL, CSV) or not Parquet: 422. The same file uploaded again
    by the same user gets the same id.
    """
    fmt = format or format_of(filename)
    if fmt is None:
        raise APIError(
            415, "UnsupportedMediaType",
            f"cannot tell the format of {filename!r}: its extension is none of "
            f"{', '.join(FORMAT_BY_EXTENSION)}",
            f"rename the file, or pass format= one of {', '.join(FORMATS)}",
        )  # fmt: skip
    data = await request.body()
    if len(data) > settings.max_upload_bytes:  # the body limit refuses it first; kept for safety
        raise APIError(413, "PayloadTooLarge",
                       f"upload too large: {len(data)} bytes; at most {settings.max_upload_bytes} "
                       "bytes (max_upload_bytes)", "upload a smaller file")  # fmt: skip
    return await run_in_threadpool(_store, store, session, user, data, filename, fmt)


def _store(
    store: ArtifactStore, session: Session, user: Caller, data: bytes, filename: str,
    fmt: DataFormat,
) -> DatasetUpload:  # fmt: skip
    try:
        record = dataset_uploads.save_upload(store, data, owner=user.name, filename=filename,
                                             fmt=fmt)  # fmt: skip
    except dataset_uploads.UploadRefused as exc:
        raise APIError(422, "ValidationError", f"{filename}: {exc}",
                       "upload the file itself, in the format its name says") from None  # fmt: skip
    users.audit(session, user.name, "dataset.upload", record.id,
                {"filename": filename, "format": fmt, "size": record.size})  # fmt: skip
    session.commit()
    return record


@router.get(
    "/{upload_id}",
    response_model=DatasetUpload,
    summary="An uploaded dataset's record",
    responses=error_responses(404),
)
def get_dataset(upload_id: UploadId, store: StoreDep, user: UserDep) -> DatasetUpload:
    """Owner, file name, format, size and sha256 of one of your uploads (an admin: anyone's);
    404 for an unknown id or another member's upload."""
    record = owned_upload(store, upload_id, user)
    if record is None:
        raise APIError(404, "NotFound", f"no uploaded dataset {upload_id!r}", UPLOAD_HINT)
    return record


def owned_upload(store: ArtifactStore, upload_id: str, user: Caller) -> DatasetUpload | None:
    """The caller's upload (anyone's for an admin), or None: another member's is as none."""
    record = dataset_uploads.read_record(store, upload_id)
    if record is None or (record.owner != user.name and not user.is_admin):
        return None
    return record


def check_spec_upload(store: ArtifactStore, user: Caller, spec: JobSpec) -> None:
    """422 at submission for a `dataset.upload` (or a condition's `demo_dataset.upload`) that
    is not one of the caller's uploads."""
    for field, data in spec.dataset_specs():
        if not isinstance(data, FileDataset) or data.upload is None:
            continue
        if owned_upload(store, data.upload, user) is None:
            raise APIError(
                422, "ValidationError",
                f"{field}.upload: no uploaded dataset {data.upload!r} of yours", UPLOAD_HINT,
            )  # fmt: skip
