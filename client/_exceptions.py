"""Exceptions the SDK raises: one class per HTTP status family, and job outcomes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from reprlab.schemas.jobs import Job


class ReprlabError(Exception):
    """Base class of every SDK error."""


class APIConnectionError(ReprlabError):
    """The server could not be reached."""


class APITimeoutError(APIConnectionError):
    """The request timed out."""


class APIStatusError(ReprlabError):
    """The server answered with an error status; `type`, `message`, `hint` come from its body."""

    def __init__(
        self, status_code: int, type: str, message: str, hint: str | None,
        response: httpx.Response | None = None,
    ) -> None:  # fmt: skip
        self.status_code, self.type, self.message, self.hint = status_code, type, message, hint
        self.response = response
        text = f"{status_code} {type}: {message}"
        if hint:
            text += f" (hint: {hint})"
        super().__init__(text)


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401: missing or invalid API key."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404: no such job or artifact (or not yours)."""


class ConflictError(APIStatusError):
    """409: the job is not in a state that allows the request."""


class UnprocessableEntityError(APIStatusError):
    """422: the request (usually the job spec) is invalid; the message names the fields."""


class RateLimitError(APIStatusError):
    """429."""


class InternalServerError(APIStatusError):
    """5xx."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
    404: NotFoundError, 409: ConflictError, 422: UnprocessableEntityError, 429: RateLimitError,
}  # fmt: skip


def status_error(response: httpx.Response) -> APIStatusError:
    """The exception for an error response, from its {"error": {...}} body when present."""
    type_, message, hint = "HTTPError", response.reason_phrase or "error", None
    try:
        body = response.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            type_ = str(err.get("type") or type_)
            message = str(err.get("message") or message)
            hint = err.get("hint")
        elif isinstance(body, dict) and "detail" in body:
            message = str(body["detail"])
    except ValueError:
        if response.text:
            message = response.text[:500]
    status = response.status_code
    cls = _BY_STATUS.get(status, InternalServerError if status >= 500 else APIStatusError)
    return cls(status, type_, message, hint, response)


class JobFailedError(ReprlabError):
    """The job ended as failed; `job.error` says why."""

    def __init__(self, job: Job) -> None:
        self.job = job
        err = job.error
        text = f"job {job.id} failed"
        if err is not None:
            text += f": {err.type}: {err.message}"
            if err.hint:
                text += f" (hint: {err.hint})"
        super().__init__(text)


class JobCancelledError(ReprlabError):
    """The job was cancelled."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.id} was cancelled")


class WaitTimeoutError(ReprlabError, TimeoutError):
    """`wait` gave up before the job finished (the job keeps running)."""
