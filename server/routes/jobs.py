"""Jobs: create, list, get, cancel, results."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from reprlab.schemas.jobs import Job, JobError, JobList, JobStatus
from reprlab.schemas.results import JobResults
from reprlab.schemas.specs import JobSpec
from reprlab.schemas.users import USER_NAME_PATTERN
from reprlab.server import crud, limits, users
from reprlab.server.config import Settings
from reprlab.server.deps import QueueDep, SessionDep, SettingsDep, StoreDep, UserDep
from reprlab.server.errors import AUTHENTICATED_ERRORS, VALIDATION_HINT, APIError, error_responses
from reprlab.server.queue import QueueUnavailable
from reprlab.server.routes.datasets import check_spec_upload
from reprlab.server.storage import ArtifactNotFound
from reprlab.server.users import Caller

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=error_responses(*AUTHENTICATED_ERRORS))

# Beyond any real page, and within every database's integer range (a larger OFFSET is a 500).
MAX_OFFSET = 2**31 - 1

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


def job_time_limit(spec: JobSpec, settings: Settings) -> int:
    """The job's wall-clock limit: its `time_limit_s`, else the server's `max_job_seconds`;
    422 `LimitExceeded` for an ask above that maximum."""
    if spec.time_limit_s is None:
        return settings.max_job_seconds
    if spec.time_limit_s > settings.max_job_seconds:
        raise APIError(
            422, "LimitExceeded",
            f"time_limit_s is {spec.time_limit_s}, more than this server allows: "
            f"max_job_seconds = {settings.max_job_seconds}",
            f"ask for at most {settings.max_job_seconds} s, or leave time_limit_s out",
        )  # fmt: skip
    return spec.time_limit_s


def owned_job(session: SessionDep, job_id: str, user: Caller) -> Job:
    """The caller's job (any job for an admin), or 404: another member's job is
    indistinguishable from none."""
    job = crud.get_job(session, job_id, owner=user.owner_filter())
    if job is None:
        raise APIError(404, "NotFound", f"no job {job_id!r}",
                       "list your jobs with GET /v1/jobs (or `reprlab list`)")  # fmt: skip
    return job


@router.post(
    "",
    response_model=Job,
    status_code=status.HTTP_201_CREATED,
    summary="Submit a job",
    responses=error_responses(403, 413),
)
def create_job(
    spec: JobSpec, session: SessionDep, user: UserDep, queue: QueueDep, settings: SettingsDep,
    store: StoreDep,
) -> Job:  # fmt: skip
    """Validate a `JobSpec`, store the job as `queued` and hand it to the workers.

    An invalid spec is a 422 naming each bad field; one over a per-job limit a 422
    `LimitExceeded`; a model or path the server does not allow a 403; a full quota a 429
    `QuotaExceeded` (docs/limits.md). If the job queue (Redis) is down the job is marked failed
    and the answer is 503.
    """
    refuse_nul_characters(spec)
    time_limit_s = job_time_limit(spec, settings)
    check_spec_upload(store, user, spec)  # 422 for an upload id that is not the caller's
    limits.check_submission(session, user, spec, settings)  # locks the user's row to commit
    with users.auditing_job_submission(session, user.name, spec):
        job = crud.create_job(session, user.name, spec, time_limit_s=time_limit_s)
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


@router.get(
    "",
    response_model=JobList,
    summary="List your jobs, newest first",
    responses=error_responses(403),
)
def list_jobs(
    session: SessionDep,
    user: UserDep,
    status_: Annotated[JobStatus | None, Query(alias="status", description="Filter.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Jobs to skip.")] = 0,
    owner: Annotated[
        str | None,
        Query(
            description="Only this user's jobs (admins; a member may name only themselves).",
            max_length=128,
            pattern=USER_NAME_PATTERN,
        ),
    ] = None,
) -> JobList:
    """The caller's jobs (an admin's: everyone's, or `owner`'s), newest first, optionally
    filtered by status; 403 for a member naming another owner."""
    if owner is not None and owner != user.name and not user.is_admin:
        raise APIError(403, "Forbidden", f"members list only their own jobs; owner must be "
                       f"{user.name!r} or left out, not {owner!r}",
                       "an admin key can list anyone's jobs")  # fmt: skip
    owner = owner if owner is not None else user.owner_filter()
    return crud.list_jobs(session, owner, status=status_, limit=limit, offset=offset)


@router.get(
    "/{job_id}",
    response_model=Job,
    summary="A job's status, progress and stage log",
    responses=error_responses(404),
)
def get_job(job_id: JobId, session: SessionDep, user: UserDep) -> Job:
    """One of the caller's jobs; 404 for an unknown id or another user's job."""
    return owned_job(session, job_id, user)


@router.post(
    "/{job_id}/cancel",
    response_model=Job,
    summary="Cancel a queued or running job",
    responses=error_responses(404, 409),
)
def cancel_job(job_id: JobId, session: SessionDep, user: UserDep) -> Job:
    """Cancel a queued job at once; a running job stops at its next batch. Finished: 409."""
    owned_job(session, job_id, user)
    try:
        job = crud.request_cancel(session, job_id, owner=user.owner_filter())
    except crud.JobNotFound as exc:
        raise APIError(404, "NotFound", f"no job {job_id!r}") from exc
    except crud.JobConflict as exc:
        raise APIError(409, "Conflict", str(exc), "a finished job cannot be cancelled") from exc
    # crud commits the transition itself; the entry follows in its own commit.
    users.audit(session, user.name, "job.cancel", job_id,
                {"owner": job.owner, "status": job.status.value})  # fmt: skip
    session.commit()
    return job


@router.get(
    "/{job_id}/results",
    response_model=JobResults,
    summary="Typed results",
    responses=error_responses(404, 409),
)
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
