"""The Celery application of the GPU workers.

Settings fit long GPU jobs: one task at a time per process (prefetch 1), late acks with
reject-on-worker-lost so a killed worker's job is redelivered, a visibility timeout longer than
any job, JSON only (no pickle on the wire). Start a worker with `reprlab worker`, which runs
`celery -A reprlab.worker.celery_app worker --pool solo --queues reprlab` (solo pool: no CUDA
in a forked child).
"""

from __future__ import annotations

from celery import Celery

from reprlab.server.config import get_settings

QUEUE = "reprlab"
RUN_JOB_TASK = "reprlab.run_job"

# A job may run for many hours; Redis redelivers unacked tasks after this many seconds.
VISIBILITY_TIMEOUT_S = 48 * 3600


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
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
    )
    return app


app = make_celery(get_settings().broker_url)
