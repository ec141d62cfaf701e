"""Hand a job to the workers: a Celery task sent by name, so the server never imports torch.

The API process holds a bare Celery client (no task modules included); the worker side
(`reprlab.worker.celery_app`) registers `reprlab.run_job` and consumes the `reprlab` queue.
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

QUEUE = "reprlab"
RUN_JOB_TASK = "reprlab.run_job"


# One quick retry on a fresh connection, then give up.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


class QueueUnavailable(RuntimeError):
    """The broker did not take the message (e.g. Redis is down)."""


class JobQueue(Protocol):
    """Something that hands a stored job to a worker."""

    def enqueue(self, job_id: str) -> None:
        """Queue `job_id` for a worker; raise `QueueUnavailable` if that is impossible."""
        ...


class CeleryQueue:
    """Sends `reprlab.run_job(job_id)` to the `reprlab` queue of a Celery broker."""

    def __init__(self, broker_url: str, *, connect_timeout: float = 3.0) -> None:
        self.broker_url = broker_url
        self._app = Celery("reprlab-api", broker=broker_url, set_as_current=False)
        self._app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            result_backend=None,
            task_ignore_result=True,
            broker_connection_retry_on_startup=False,
            broker_connection_timeout=connect_timeout,
            # Fail fast when the broker is down (the API answers 503 instead of hanging); the
            # publish retry below still replaces a pooled connection that a Redis restart broke.
            broker_transport_options={
                "max_retries": 0,
                "socket_connect_timeout": connect_timeout,
                "socket_timeout": connect_timeout,
            },
        )

    def enqueue(self, job_id: str) -> None:
        """Publish the task message; `QueueUnavailable` if the broker does not take it."""
        try:
            self._app.send_task(
                RUN_JOB_TASK, args=[job_id], queue=QUEUE, ignore_result=True,
                retry=True, retry_policy=_PUBLISH_RETRY,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - kombu raises many transport error types
            raise QueueUnavailable(
                f"the job queue at {_redact(self.broker_url)} did not take the job: {exc}"
            ) from exc


def _redact(url: str) -> str:
    """The broker URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"
