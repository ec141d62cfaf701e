"""Hand a job to the workers: a Celery task sent by name, so the server never imports torch."""

from __future__ import annotations

from typing import Protocol

from celery import Celery

QUEUE = "reprlab"
RUN_JOB_TASK = "reprlab.run_job"


class QueueUnavailable(RuntimeError):
    """The broker did not take the message."""


class JobQueue(Protocol):
    def enqueue(self, job_id: str) -> None: ...


class CeleryQueue:
    """Sends `reprlab.run_job(job_id)` to the `reprlab` queue of the broker."""

    def __init__(self, broker_url: str) -> None:
        self._app = Celery("reprlab-api", broker=broker_url)
        self._app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=False,
            broker_connection_timeout=3,
            broker_transport_options={"max_retries": 1},
        )

    def enqueue(self, job_id: str) -> None:
        try:
            self._app.send_task(RUN_JOB_TASK, args=[job_id], queue=QUEUE, retry=False)
        except Exception as exc:  # noqa: BLE001 - kombu raises many transport errors
            raise QueueUnavailable(f"the job queue (broker) is unreachable: {exc}") from exc
