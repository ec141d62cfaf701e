"""The FastAPI application: `uvicorn reprlab.server.app:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from reprlab.server.config import Settings, get_settings
from reprlab.server.db import init_db, make_engine, session_factory
from reprlab.server.errors import install_error_handlers
from reprlab.server.queue import CeleryQueue, JobQueue
from reprlab.server.routes import artifacts, health, jobs
from reprlab.server.storage import ArtifactStore

VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, queue: JobQueue | None = None) -> FastAPI:
    """Build the API around a database, an artifact store and a job queue."""
    settings = settings if settings is not None else get_settings()
    engine = make_engine(settings.database_url)
    init_db(engine)
    app = FastAPI(
        title="reprlab",
        version=VERSION,
        description=(
            "Submit analysis jobs comparing how a language model represents a task under "
            "in-context learning and fine-tuning; follow them; fetch typed results and artifacts."
        ),
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.store = ArtifactStore(settings.artifact_url)
    app.state.queue = queue if queue is not None else CeleryQueue(settings.broker_url)
    install_error_handlers(app)
    app.include_router(health.router, prefix="/v1")
    app.include_router(jobs.router, prefix="/v1")
    app.include_router(artifacts.router, prefix="/v1")
    return app
