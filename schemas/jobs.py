"""Job state as the server stores it and the SDK sees it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from reprlab.schemas._base import ResponseModel
from reprlab.schemas.specs import JobSpec


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Progress(ResponseModel):
    """Where a running job is."""

    stage: str = Field(default="queued", description="Current stage, e.g. 'extract:icl-5'.")
    fraction: float = Field(default=0.0, ge=0.0, le=1.0, description="Overall fraction done.")
    message: str = Field(default="", description="Human-readable detail of the current step.")


class StageRecord(ResponseModel):
    """One finished stage in a job's stage log."""

    name: str = Field(description="Stage name, e.g. 'extract:zero-shot'.")
    outcome: str = Field(
        description=(
            "'done' (computed), 'cached' (reused), 'skipped', or 'interrupted' (an attempt "
            "whose worker died or gave the job back; `detail` says why)."
        )
    )
    seconds: float = Field(description="Wall-clock seconds the stage took.")
    detail: str = Field(default="", description="What was computed or reused.")


class JobError(ResponseModel):
    """An error carried as data from the worker to the client."""

    type: str = Field(description="Error class, e.g. 'SpecError', 'ModelLoadError'.")
    message: str = Field(description="What went wrong.")
    hint: str | None = Field(default=None, description="What to change to fix it.")


class Job(ResponseModel):
    """A submitted analysis job."""

    id: str = Field(description="Job id.")
    status: JobStatus = Field(description="Lifecycle state.")
    owner: str = Field(description="Name of the API key's user that submitted the job.")
    name: str | None = Field(default=None, description="The spec's free label.")
    spec: JobSpec = Field(description="The validated job spec.")
    progress: Progress = Field(default_factory=Progress, description="Live progress.")
    stages: list[StageRecord] = Field(default_factory=list, description="Finished stages.")
    error: JobError | None = Field(default=None, description="Set when the job failed.")
    created_at: datetime = Field(description="Submission time (UTC).")
    started_at: datetime | None = Field(default=None, description="When a worker started it.")
    finished_at: datetime | None = Field(default=None, description="When it ended.")
    attempts: int = Field(
        default=0, description="How many times a worker has started it (retries after faults)."
    )
    time_limit_s: int | None = Field(
        default=None, description="Its wall-clock limit in seconds, counted from its first start."
    )


class JobList(ResponseModel):
    """A page of jobs, newest first."""

    jobs: list[Job] = Field(description="The jobs on this page.")
    total: int = Field(description="Number of jobs matching the query.")
