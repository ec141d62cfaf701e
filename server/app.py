"""The FastAPI application: `uvicorn reprlab.server.app:create_app --factory`.

The app never imports the worker (torch, transformers): it stores jobs and enqueues Celery
tasks by name, so it starts in well under a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from reprlab.server.config import Settings, get_settings
from reprlab.server.db import init_db, make_engine, session_factory
from reprlab.server.errors import install_error_handlers
from reprlab.server.queue import CeleryQueue, JobQueue
from reprlab.server.ratelimit import install_rate_limit
from reprlab.server.reconciler import start_reconciler
from reprlab.server.routes import admin, artifacts, datasets, health, jobs, me
from reprlab.server.storage import ArtifactStore
from reprlab.server.uploads import install_body_limit

VERSION = "0.1.0"

DESCRIPTION = """\
Submit analysis jobs comparing how a language model represents a task under in-context
learning and fine-tuning; follow their progress; fetch typed per-layer results and artifacts
(activations as safetensors, plots as PNG).

Authenticate with `Authorization: Bearer <key>` (or `X-API-Key`); create a key with
`reprlab admin create-key NAME`. Every error has the body
`{"error": {"type": ..., "message": ..., "hint": ...}}`.
"""


def create_app(settings: Settings | None = None, *, queue: JobQueue | None = None) -> FastAPI:
    """Build the API around a database, an artifact store and a job queue.

    Args:
        settings: defaults to `get_settings()` (the `REPRLAB_*` environment).
        queue: defaults to a `CeleryQueue` on `settings.broker_url`.
    """
    settings = settings if settings is not None else get_settings()
    engine = make_engine(settings.database_url)
    init_db(engine)

    @asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[None]:
        # Re-enqueues jobs the broker lost or whose worker died (docs/faults.md).
        reconciler = start_reconciler(running.state.sessions, running.state.queue, settings,
                                      store=running.state.store)  # fmt: skip
        try:
            yield
        finally:
            if reconciler is not None:
                reconciler.stop()
            engine.dispose()

    app = FastAPI(title="reprlab", version=VERSION, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.store = ArtifactStore(settings.artifact_url)
    app.state.queue = queue if queue is not None else CeleryQueue(settings.broker_url)
    install_error_handlers(app)
    install_body_limit(app, settings)
    install_rate_limit(app, settings)  # outermost: refuses before a body is read
    app.include_router(health.router, prefix="/v1")
    app.include_router(jobs.router, prefix="/v1")
    app.include_router(artifacts.router, prefix="/v1")
    app.include_router(datasets.router, prefix="/v1")
    app.include_router(me.router, prefix="/v1")
    app.include_router(admin.router, prefix="/v1")
    return app
