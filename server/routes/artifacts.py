"""A job's downloadable artifacts: activations (safetensors), plots (PNG), results (JSON)."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from reprlab.server import crud
from reprlab.server.deps import SessionDep, StoreDep, UserDep
from reprlab.server.errors import AUTHENTICATED_ERRORS, APIError, error_responses
from reprlab.server.routes.jobs import JobId, owned_job
from reprlab.server.storage import ArtifactNotFound

router = APIRouter(
    prefix="/jobs", tags=["artifacts"], responses=error_responses(*AUTHENTICATED_ERRORS, 404)
)

_CHUNK = 1 << 20


class ArtifactInfo(BaseModel):
    """One downloadable file of a job."""

    name: str = Field(description="Artifact name, e.g. 'plots/id_twonn.png'.")
    size: int = Field(description="Size in bytes.")
    media_type: str = Field(description="MIME type.")


class ArtifactList(BaseModel):
    """A job's artifacts."""

    artifacts: list[ArtifactInfo] = Field(description="The job's artifacts, by name.")


def media_type(name: str) -> str:
    """The MIME type an artifact is served with (safetensors are opaque bytes)."""
    if name.endswith(".safetensors"):
        return "application/octet-stream"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


@router.get("/{job_id}/artifacts", response_model=ArtifactList, summary="List artifacts")
def list_artifacts(
    job_id: JobId, session: SessionDep, store: StoreDep, user: UserDep
) -> ArtifactList:
    """Name, size and media type of each artifact (none until the job has succeeded)."""
    owned_job(session, job_id, user)
    items = []
    for name, key in sorted(crud.artifact_keys(session, job_id).items()):
        try:
            items.append(ArtifactInfo(name=name, size=store.size(key), media_type=media_type(name)))
        except ArtifactNotFound:
            continue
    return ArtifactList(artifacts=items)


@router.get(
    "/{job_id}/artifacts/{name:path}",
    summary="Download an artifact",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The artifact's bytes (safetensors, PNG or JSON).",
            "content": {"application/octet-stream": {}, "image/png": {}, "application/json": {}},
        }
    },
)
def download_artifact(
    job_id: JobId, name: str, session: SessionDep, store: StoreDep, user: UserDep
) -> StreamingResponse:
    """Stream one artifact; 404 listing the available names if `name` is not one of them."""
    owned_job(session, job_id, user)
    keys = crud.artifact_keys(session, job_id)
    key = keys.get(name)
    if key is None:
        have = ", ".join(sorted(keys)) or "none yet (the job has not succeeded)"
        raise APIError(
            404, "NotFound", f"job {job_id} has no artifact {name!r}", f"available: {have}"
        )
    try:
        size = store.size(key)
        handle = store.open(key)
    except ArtifactNotFound as exc:
        raise APIError(404, "NotFound", f"artifact {name!r} is missing from the store") from exc

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(_CHUNK):
                yield block

    filename = name.rsplit("/", 1)[-1]
    headers = {"Content-Length": str(size),
               "Content-Disposition": f'attachment; filename="{filename}"'}  # fmt: skip
    return StreamingResponse(chunks(), media_type=media_type(name), headers=headers)
