"""`GET /v1/me`: who the request's API key authenticates as."""

from __future__ import annotations

from fastapi import APIRouter

from reprlab.schemas.users import Me
from reprlab.server import users
from reprlab.server.deps import SessionDep, SettingsDep, UserDep
from reprlab.server.errors import AUTHENTICATED_ERRORS, error_responses

router = APIRouter(tags=["users"])


@router.get(
    "/me",
    response_model=Me,
    summary="Who you are",
    responses=error_responses(*AUTHENTICATED_ERRORS),
)
def get_me(session: SessionDep, user: UserDep, settings: SettingsDep) -> Me:
    """Your user name, role, the id of the key you used and the job quotas that apply to you."""
    running, queued = users.effective_quotas(
        users.get_user(session, user.name), settings.max_running_jobs, settings.max_queued_jobs
    )
    return Me(name=user.name, role=user.role, key_id=user.key_id, max_running_jobs=running,
              max_queued_jobs=queued)  # fmt: skip
