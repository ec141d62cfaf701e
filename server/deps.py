"""Request dependencies: settings, database sessions, the artifact store, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from reprlab.server import users
from reprlab.server.auth import key_from_headers, unauthorized
from reprlab.server.config import Settings
from reprlab.server.queue import JobQueue
from reprlab.server.storage import ArtifactStore


def get_session(request: Request) -> Iterator[Session]:
    """One database session per request, closed after the response."""
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
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def current_user(
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Header(description="'Bearer <API key>'.")] = None,
    x_api_key: Annotated[str | None, Header(description="The API key (alternative).")] = None,
) -> users.Caller:
    """The user of the request's API key; 401 without a valid (unrevoked, unexpired) one."""
    key = key_from_headers(authorization, x_api_key)
    if key is None:
        raise unauthorized("missing API key")
    caller = users.authenticate(session, key)
    if caller is None:
        raise unauthorized("invalid, revoked or expired API key")
    request.state.caller = caller  # the rate limiter gives an accepted key its own bucket
    return caller


UserDep = Annotated[users.Caller, Depends(current_user)]
