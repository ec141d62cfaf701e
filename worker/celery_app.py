"""The Celery application of the GPU workers.

Settings fit long GPU jobs: one task at a time per process (prefetch 1), late acks with
reject-on-worker-lost so the message of a job whose worker died stays with the broker, JSON only
(no pickle on the wire). Start a worker with `reprlab worker`, which runs
`celery -A reprlab.worker.celery_app worker --pool solo --queues reprlab` (solo pool: no CUDA
in a forked child).

What keeps a job from running twice is the job's lease in the database, not the broker: a
message delivered again (the Redis visibility timeout ran out under a long job, or the
reconciler re-enqueued it) for a job whose worker still renews its lease is dropped. So the
visibility timeout is only the broker's own slow backstop for a dead worker's message (the
reconciler re-enqueues such jobs within a minute); one hour, kombu's default, means a job of
many hours costs one dropped duplicate delivery per hour. See docs/faults.md.
"""

from __future__ import annotations

from celery import Celery

from reprlab.server.config import get_settings

QUEUE = "reprlab"
RUN_JOB_TASK = "reprlab.run_job"

# Redis hands an unacked message to another consumer after this many seconds.
VISIBILITY_TIMEOUT_S = 3600


def make_celery(broker_url: str) -> Celery:
    """A Celery app bound to the broker, with the task module registered."""
    app = Celery("reprlab", broker=broker_url, include=["reprlab.worker.tasks"])
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A broker blip (Redis restarted) must not abandon hours of GPU work: the running job
        # keeps its lease and finishes; its lost message is no loss (the database has the job).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
    )
    return app


app = make_celery(get_settings().broker_url)
