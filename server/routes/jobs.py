"""Jobs: create, list, get, cancel, results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from reprlab.schemas.jobs import Job, JobError, JobList, JobStatus
from reprlab.schemas.results import JobResults
from reprlab.schemas.specs import JobSpec
from reprlab.server import crud
from reprlab.server.deps import QueueDep, SessionDep, StoreDep, UserDep
from reprlab.server.errors import APIError
from reprlab.server.queue import QueueUnavailable
from reprlab.server.storage import ArtifactNotFound

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(description="Job id.", max_length=64)]


def owned_job(session: SessionDep, job_id: str, user: str) -> Job:
    """The caller's job, or 404 (another user's job is indistinguishable from none)."""
    job = crud.get_job(session, job_id, owner=user)
    if job is None:
        raise APIError(404, "NotFound", f"no job {job_id!r}",
                       "list your jobs with GET /v1/jobs (or `reprlab list`)")  # fmt: skip
    return job


@router.post("", response_model=Job, status_code=status.HTTP_201_CREATED, summary="Submit a job")
def create_job(spec: JobSpec, session: SessionDep, user: UserDep, queue: QueueDep) -> Job:
    job = crud.create_job(session, user, spec)
    try:
        queue.enqueue(job.id)
    except QueueUnavailable as exc:
        error = JobError(type="QueueUnavailable", message=str(exc), hint="start Redis, resubmit")
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
    return crud.list_jobs(session, user, status=status_, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=Job, summary="A job's status, progress and stage log")
def get_job(job_id: JobId, session: SessionDep, user: UserDep) -> Job:
    return owned_job(session, job_id, user)


@router.post("/{job_id}/cancel", response_model=Job, summary="Cancel a queued or running job")
def cancel_job(job_id: JobId, session: SessionDep, user: UserDep) -> Job:
    owned_job(session, job_id, user)
    try:
        return crud.request_cancel(session, job_id, owner=user)
    except crud.JobConflict as exc:
        raise APIError(409, "Conflict", str(exc)) from exc


@router.get("/{job_id}/results", response_model=JobResults, summary="Typed results")
def get_results(job_id: JobId, session: SessionDep, store: StoreDep, user: UserDep) -> JobResults:
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
