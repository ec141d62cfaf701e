"""A Celery worker that SIGKILLs itself when a job reports progress in a given stage.

It stands for a worker that keeps dying on one job (the kernel's OOM killer, a crash in a
native library): `python dying_worker.py STAGE_PREFIX <celery worker arguments>`. The hook sits
in this test-only launcher, around the reporter the real runner uses, so the package carries no
fault-injection code.
"""

from __future__ import annotations

import os
import signal
import sys

from celery.__main__ import main

from reprlab.worker import runner


def _install(stage_prefix: str) -> None:
    report = runner.DbReporter.progress

    def progress(self: runner.DbReporter, stage: str, fraction: float, message: str) -> None:
        if stage.startswith(stage_prefix):
            os.kill(os.getpid(), signal.SIGKILL)
        report(self, stage, fraction, message)

    runner.DbReporter.progress = progress  # type: ignore[method-assign]


if __name__ == "__main__":
    _install(sys.argv[1])
    sys.argv = ["celery", *sys.argv[2:]]
    sys.exit(main())
