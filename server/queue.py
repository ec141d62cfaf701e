"""Hand a job to the workers: a Celery task sent by name, so the server never imports torch.

The API process holds a bare Celery client (no task modules included); the worker side
(`reprlab.worker.celery_app`) registers `reprlab.run_job` and consumes the `reprlab` queue.
The reconciler also asks the broker which jobs it still holds a message for (`pending_jobs`),
reading kombu's Redis structures: the queue lists and the hash of delivered, unacked messages.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol, cast, runtime_checkable

import redis
from celery import Celery

log = logging.getLogger(__name__)

QUEUE = "reprlab"
RUN_JOB_TASK = "reprlab.run_job"


# One quick retry on a fresh connection, then give up.
_PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


# kombu's Redis transport: a queue is one list per priority step (the default step has the
# bare queue name), delivered-but-unacked messages sit in a hash with an index of delivery times.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
_UNACKED = "unacked"
_UNACKED_INDEX = "unacked_index"


class QueueUnavailable(RuntimeError):
    """The broker did not take the message (e.g. Redis is down)."""


class JobQueue(Protocol):
    """Something that hands a stored job to a worker."""

    def enqueue(self, job_id: str) -> None:
        """Queue `job_id` for a worker; raise `QueueUnavailable` if that is impossible."""
        ...


@runtime_checkable
class BrokerView(Protocol):
    """A queue that can say which jobs it still holds a live message for."""

    def pending_jobs(self, *, now: float, grace_s: float) -> set[str]:
        """Ids of jobs with a message waiting in the queue, or delivered to a worker less than
        `grace_s` seconds ago (or due, for a delayed message, in the future or within that).

        Raises:
            QueueUnavailable: the broker cannot be read.
        """
        ...


class CeleryQueue:
    """Sends `reprlab.run_job(job_id)` to the `reprlab` queue of a Celery broker."""

    def __init__(self, broker_url: str, *, connect_timeout: float = 3.0) -> None:
        self.broker_url = broker_url
        self._timeout = connect_timeout
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

    def pending_jobs(self, *, now: float, grace_s: float) -> set[str]:
        """See `BrokerView.pending_jobs`; a Redis broker only."""
        try:
            client = redis.Redis.from_url(
                self.broker_url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
            )
            with client:
                waiting = [m for key in _queue_keys(QUEUE) for m in client.lrange(key, 0, -1)]
                unacked = client.hgetall(_UNACKED)
                index = client.zrange(_UNACKED_INDEX, 0, -1, withscores=True)
        except (redis.RedisError, OSError) as exc:
            raise QueueUnavailable(
                f"cannot read the job queue at {_redact(self.broker_url)}: {exc}"
            ) from exc
        delivered = {_text(t): float(at) for t, at in cast(list[tuple[bytes, float]], index)}
        pending = {job for job, _ in _run_job_messages(waiting)}
        for tag, raw in unacked.items():
            try:
                payload = json.loads(raw)[0]
            except (ValueError, IndexError, TypeError):
                continue
            for job, eta in _run_job_messages([payload]):
                at = delivered.get(_text(tag), 0.0)
                if max(at, eta or 0.0) > now - grace_s:
                    pending.add(job)
        return pending


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _queue_keys(queue: str) -> list[str]:
    return [queue if not step else f"{queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS]


def _run_job_messages(messages: Iterable[Any]) -> Iterable[tuple[str, float | None]]:
    """(job id, ETA as a UNIX time or None) of each `reprlab.run_job` message (protocol 2)."""
    for message in messages:
        try:
            data = json.loads(message) if isinstance(message, (bytes, str)) else message
            headers = data.get("headers") or {}
            if headers.get("task") != RUN_JOB_TASK:
                continue
            body = data["body"]
            if (data.get("properties") or {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]
            when = _timestamp(headers["eta"]) if headers.get("eta") else None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            log.debug("skipping an unreadable broker message", exc_info=True)
            continue
        if args and isinstance(args[0], str):
            yield args[0], when


def _timestamp(iso: str) -> float:
    at = datetime.fromisoformat(iso)
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


def _redact(url: str) -> str:
    """The broker URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"
