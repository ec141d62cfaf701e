"""Jobs: create, list, get, cancel, results."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from reprlab.schemas.jobs import Job, JobError, JobList, JobStatus
from reprlab.schemas.results import JobResults
from reprlab.schemas.specs import JobSpec
from reprlab.server import crud
from reprlab.server.deps import QueueDep, SessionDep, StoreDep, UserDep
from reprlab.server.errors import VALIDATION_HINT, APIError
from reprlab.server.queue import QueueUnavailable
from reprlab.server.storage import ArtifactNotFound
from reprlab.server.users import Caller

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[
    str, Path(description="Job id (32 hex digits).", max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]


def _nul_fields(value: Any, where: str = "") -> Iterator[str]:
    """Dotted locations of every string in `value` that holds a NUL character."""
    if isinstance(value, str):
        if "\x00" in value:
            yield where or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nul_fields(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nul_fields(item, f"{where}.{i}" if where else str(i))


def refuse_nul_characters(spec: JobSpec) -> None:
    """422 for NUL characters in the spec: no database text column can store them."""
    bad = list(_nul_fields(spec.model_dump(mode="json")))
    if bad:
        message = "; ".join(f"{loc}: text must not contain NUL (\\u0000) characters" for loc in bad)
        raise APIError(422, "ValidationError", message, VALIDATION_HINT)


def owned_job(session: SessionDep, job_id: str, user: Caller) -> Job:
    """The caller's job (any job for an admin), or 404: another member's job is
    indistinguishable from none."""
    job = crud.get_job(session, job_id, owner=user.owner_filter())
    if job is None:
        raise APIError(404, "NotFound", f"no job {job_id!r}",
                       "list your jobs with GET /v1/jobs (or `reprlab list`)")  # fmt: skip
    return job


@router.post("", response_model=Job, status_code=status.HTTP_201_CREATED, summary="Submit a job")
def create_job(spec: JobSpec, session: SessionDep, user: UserDep, queue: QueueDep) -> Job:
    """Validate a `JobSpec`, store the job as `queued` and hand it to the workers.

    An invalid spec is a 422 naming each bad field. If the job queue (Redis) is down the job
    is marked failed and the answer is 503.
    """
    refuse_nul_characters(spec)
    job = crud.create_job(session, user.name, spec)
    try:
        queue.enqueue(job.id)
    except QueueUnavailable as exc:
        error = JobError(
            type="QueueUnavailable", message=str(exc), hint="start Redis and submit the job again"
        )
        crud.fail_job(session, job.id, error)
        raise APIError(503, "ServiceUnavailable", str(exc),
                       "the job queue is down; start Redis (`reprlab up`) and resubmit",
                       headers={"Retry-After": "5"}) from exc  # fmt: skip
    return job


@router.get("", response_model=JobList, summary="List your jobs, newest first")
def list_jobs(
    session: SessionDep,
    user: UserDep,
    status_: Annotated[JobStatus | None, Query(alias="status", description="Filter.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, description="Jobs to skip.")] = 0,
) -> JobList:
    """The caller's jobs, newest first, optionally filtered by status."""
    return crud.list_jobs(session, user.owner_filter(), status=status_, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=Job, summary="A job's status, progress and stage log")
def get_job(job_id: JobId, session: SessionDep, user: UserDep) -> Job:
    """One of the caller's jobs; 404 for an unknown id or another user's job."""
    return owned_job(session, job_id, user)


@router.post("/{job_id}/cancel", response_model=Job, summary="Cancel a queued or running job")
def cancel_job(job_id: JobId, session: SessionDep, user: UserDep) -> Job:
    """Cancel a queued job at once; a running job stops at its next batch. Finished: 409."""
    owned_job(session, job_id, user)
    try:
        return crud.request_cancel(session, job_id, owner=user.owner_filter())
    except crud.JobNotFound as exc:
        raise APIError(404, "NotFound", f"no job {job_id!r}") from exc
    except crud.JobConflict as exc:
        raise APIError(409, "Conflict", str(exc), "a finished job cannot be cancelled") from exc


@router.get("/{job_id}/results", response_model=JobResults, summary="Typed results")
def get_results(job_id: JobId, session: SessionDep, store: StoreDep, user: UserDep) -> JobResults:
    """The typed per-layer results of a succeeded job; 409 (saying the status) otherwise."""
    job = owned_job(session, job_id, user)
    if job.status != JobStatus.SUCCEEDED:
        message = f"job {job_id} is {job.status.value}; results exist once it has succeeded"
        if job.error is not None:
            message += f" (it failed: {job.error.type}: {job.error.message})"
        hint = None if job.status.finished else "wait for it (`reprlab status ID`, SDK `wait`)"
        raise APIError(409, "Conflict", message, hint)
    key = crud.results_key(session, job_id)
    try:
        data = store.get_bytes(key or "")
    except (ArtifactNotFound, ValueError) as exc:
        raise APIError(
            404, "NotFound", f"results of job {job_id} are missing from the store"
        ) from exc
    return JobResults.model_validate_json(data)
