"""The reprlab Python SDK: `Client(base_url, api_key).jobs.create/get/list/cancel/wait/results`."""

from reprlab.client._client import Client
from reprlab.client._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    JobCancelledError,
    JobFailedError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ReprlabError,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from reprlab.schemas import Job, JobList, JobResults, JobSpec, JobStatus

__all__ = [
    "APIConnectionError", "APIStatusError", "APITimeoutError", "AuthenticationError",
    "BadRequestError", "Client", "ConflictError", "InternalServerError", "Job",
    "JobCancelledError", "JobFailedError", "JobList", "JobResults", "JobSpec", "JobStatus",
    "NotFoundError", "PermissionDeniedError", "RateLimitError", "ReprlabError",
    "UnprocessableEntityError", "WaitTimeoutError",
]  # fmt: skip
