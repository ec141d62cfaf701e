"""Request dependencies: settings, database sessions, the artifact store, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from reprlab.server import crud
from reprlab.server.config import Settings
from reprlab.server.errors import APIError
from reprlab.server.queue import JobQueue
from reprlab.server.storage import ArtifactStore


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]

_AUTH_HINT = (
    "create a key with `reprlab admin create-key NAME` on the server machine and pass it as "
    "'Authorization: Bearer <key>' (the SDK reads REPRLAB_API_KEY)"
)


def current_user(
    session: SessionDep,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
    x_api_key: Annotated[str | None, Header(description="The API key (alternative)")] = None,
) -> str:
    """The owner of the request's API key; 401 without a valid one."""
    key = x_api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            key = value.strip()
    if not key:
        raise APIError(401, "Unauthorized", "missing API key", _AUTH_HINT,
                       headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    owner = crud.authenticate(session, key)
    if owner is None:
        raise APIError(401, "Unauthorized", "invalid API key", _AUTH_HINT,
                       headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return owner


UserDep = Annotated[str, Depends(current_user)]
