"""Named errors of the science library.

Each carries a message that says what went wrong and, where we know it, a hint that says what
to change. The Celery task turns them into a `JobError` stored on the job; the API layer never
sees a traceback.
"""

from __future__ import annotations

from reprlab.schemas.jobs import JobError


class ReprlabError(Exception):
    """Base class: an error the user can act on."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_job_error(self) -> JobError:
        return JobError(type=type(self).__name__, message=self.message, hint=self.hint)


class SpecError(ReprlabError):
    """The job spec asks for something this model or dataset cannot give."""


class DataError(ReprlabError):
    """The dataset cannot be read, is empty, or cannot be filled with distinct items."""


class ModelLoadError(ReprlabError):
    """The model cannot be found, fetched or loaded."""


class ExtractionError(ReprlabError):
    """Hidden states could not be extracted (e.g. an unsupported architecture)."""


class MetricError(ReprlabError):
    """A metric cannot be computed on these representations."""


class JobCancelled(ReprlabError):
    """The job's owner cancelled it; raised between batches."""

    def __init__(self, message: str = "the job was cancelled") -> None:
        super().__init__(message)
