"""A job queue for API tests that need no broker: it keeps the enqueued ids in memory."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RecordingQueue:
    """A job queue that keeps the enqueued ids in memory (what a worker would receive)."""

    ids: list[str] = field(default_factory=list)

    def enqueue(self, job_id: str) -> None:
        self.ids.append(job_id)
