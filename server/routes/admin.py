"""Administration for admins: users and roles, API keys, the audit log, trusted models.

Every route needs an admin key (403 otherwise). Every change is audited with the admin's name
as actor, in the same transaction as the change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status

from reprlab.schemas.users import (
    MAX_KEY_LIFETIME_S,
    PRINTABLE_PATTERN,
    USER_NAME_PATTERN,
    AuditList,
    KeyCreate,
    KeyExpiryUpdate,
    KeyInfo,
    KeyList,
    NewKey,
    Role,
    TrustedModel,
    TrustedModelCreate,
    TrustedModelList,
    UserCreate,
    UserInfo,
    UserList,
    UserUpdate,
)
from reprlab.server import users
from reprlab.server.config import Settings
from reprlab.server.deps import SessionDep, SettingsDep, UserDep
from reprlab.server.errors import AUTHENTICATED_ERRORS, APIError, error_responses
from reprlab.server.models import UserRow, utcnow


def require_admin(user: UserDep) -> users.Caller:
    """The caller if they hold an admin key; 403 otherwise."""
    if not user.is_admin:
        raise APIError(
            403, "Forbidden",
            f"this endpoint needs an admin API key; {user.name!r} is a {user.role.value}",
            "ask an admin; on the server machine `reprlab admin set-role NAME admin` makes one",
        )  # fmt: skip
    return user


AdminDep = Annotated[users.Caller, Depends(require_admin)]
UserName = Annotated[str, Path(description="User name.", max_length=128, pattern=USER_NAME_PATTERN)]
KeyId = Annotated[int, Path(description="API key id.", ge=1, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Entries to skip.")]

router = APIRouter(
    prefix="/admin", tags=["admin"], responses=error_responses(*AUTHENTICATED_ERRORS, 403)
)


_HINT_404 = "list them with GET /v1/admin/users, /v1/admin/keys or /v1/admin/trusted-models"


@contextmanager
def domain_errors() -> Iterator[None]:
    """Map the users module's errors to 404 / 409 / 422."""
    try:
        yield
    except users.NotFoundError as exc:
        raise APIError(404, "NotFound", str(exc), _HINT_404) from exc
    except users.ConflictError as exc:
        raise APIError(409, "Conflict", str(exc)) from exc
    except ValueError as exc:
        raise APIError(422, "ValidationError", str(exc)) from exc


def _info(user: UserRow, settings: Settings) -> UserInfo:
    return users.user_info(user, default_running=settings.max_running_jobs,
                           default_queued=settings.max_queued_jobs)  # fmt: skip


def resolve_expiry(expires_at: datetime | None, expires_in_s: int | None) -> datetime | None:
    """The expiry time asked for: `expires_in_s` from now, or `expires_at`, which must lie in
    the future (at most 100 years ahead); None for never."""
    now = utcnow()
    if expires_in_s is not None:
        return now + timedelta(seconds=expires_in_s)
    if expires_at is None:
        return None
    if expires_at <= now:
        raise APIError(422, "ValidationError",
                       f"expires_at {expires_at.isoformat()} is in the past; give a future time",
                       "to stop a key working now, revoke it")  # fmt: skip
    if expires_at > now + timedelta(seconds=MAX_KEY_LIFETIME_S):
        raise APIError(422, "ValidationError",
                       f"expires_at {expires_at.isoformat()} is more than 100 years ahead",
                       "leave out expires_at for a key that never expires")  # fmt: skip
    return expires_at


# --- users -------------------------------------------------------------------------------------


@router.get("/users", response_model=UserList, summary="List users")
def list_users(
    session: SessionDep, admin: AdminDep, settings: SettingsDep, limit: Limit = 500,
    offset: Offset = 0,
) -> UserList:  # fmt: skip
    """Every user by name, with role, state and quotas."""
    rows, total = users.list_users(session, limit=limit, offset=offset)
    return UserList(users=[_info(u, settings) for u in rows], total=total)


@router.post(
    "/users", response_model=UserInfo, status_code=status.HTTP_201_CREATED,
    summary="Create a user", responses=error_responses(409),
)  # fmt: skip
def create_user(
    body: UserCreate, session: SessionDep, admin: AdminDep, settings: SettingsDep
) -> UserInfo:
    """A new user with a role and optional quota overrides; 409 if the name is taken."""
    with domain_errors():
        user = users.create_user(
            session, body.name, body.role, actor=admin.name,
            max_running_jobs=body.max_running_jobs, max_queued_jobs=body.max_queued_jobs,
        )  # fmt: skip
    return _info(user, settings)


@router.get(
    "/users/{name}", response_model=UserInfo, summary="A user", responses=error_responses(404)
)
def get_user(
    name: UserName, session: SessionDep, admin: AdminDep, settings: SettingsDep
) -> UserInfo:
    """One user."""
    with domain_errors():
        return _info(users.require_user(session, name), settings)


@router.patch(
    "/users/{name}", response_model=UserInfo, summary="Change a user's role, state or quotas",
    responses=error_responses(404, 409),
)  # fmt: skip
def update_user(
    name: UserName, body: UserUpdate, session: SessionDep, admin: AdminDep, settings: SettingsDep
) -> UserInfo:
    """Change the fields given: `role`, `disabled` (a disabled user's keys are refused),
    `max_running_jobs` / `max_queued_jobs` (null: back to the server default). An admin cannot
    demote or disable themselves here (409): another admin, or the CLI, can."""
    if name == admin.name and (body.role == Role.MEMBER or body.disabled):
        raise APIError(409, "Conflict", "you cannot demote or disable your own user",
                       "another admin can, or `reprlab admin` on the server machine")  # fmt: skip
    with domain_errors():
        return _info(users.update_user(session, name, body, actor=admin.name), settings)


# --- keys --------------------------------------------------------------------------------------


@router.get("/keys", response_model=KeyList, summary="List API keys, newest first")
def list_keys(
    session: SessionDep, admin: AdminDep,
    user: Annotated[str | None, Query(description="Only this user's keys.", max_length=128,
                                      pattern=USER_NAME_PATTERN)] = None,
    limit: Limit = 100, offset: Offset = 0,
) -> KeyList:  # fmt: skip
    """Every key (or a user's): id, prefix, owner, label, state, times; never the key or hash."""
    rows, total = users.list_keys(session, user, limit=limit, offset=offset)
    return KeyList(keys=[users.key_info(r) for r in rows], total=total)


@router.post(
    "/keys", response_model=NewKey, status_code=status.HTTP_201_CREATED,
    summary="Create an API key for a user", responses=error_responses(404),
)  # fmt: skip
def create_key(body: KeyCreate, session: SessionDep, admin: AdminDep) -> NewKey:
    """A new key for an existing user, with an optional label and expiry. The key is in this
    answer only; the server keeps its hash."""
    expires_at = resolve_expiry(body.expires_at, body.expires_in_s)
    with domain_errors():
        users.require_user(session, body.user)
        row, key = users.issue_key(
            session, body.user, label=body.label, expires_at=expires_at, created_by=admin.name
        )
    return NewKey(key=key, **users.key_info(row).model_dump())


@router.get(
    "/keys/{key_id}", response_model=KeyInfo, summary="An API key", responses=error_responses(404)
)
def get_key(key_id: KeyId, session: SessionDep, admin: AdminDep) -> KeyInfo:
    """One key's record."""
    with domain_errors():
        return users.key_info(users.get_key(session, key_id))


@router.post(
    "/keys/{key_id}/revoke", response_model=KeyInfo, summary="Revoke an API key",
    responses=error_responses(404, 409),
)  # fmt: skip
def revoke_key(key_id: KeyId, session: SessionDep, admin: AdminDep) -> KeyInfo:
    """The key stops working at once, for good (revoking it again changes nothing). The key
    of this very request is 409: revoke it with another admin key, or the CLI."""
    if key_id == admin.key_id:
        raise APIError(
            409, "Conflict", f"API key {key_id} is the key of this request",
            "revoke it with another admin key, or `reprlab admin revoke-key ID`",
        )  # fmt: skip
    with domain_errors():
        return users.key_info(users.revoke_key(session, key_id, actor=admin.name))


@router.patch(
    "/keys/{key_id}", response_model=KeyInfo, summary="Set or clear an API key's expiry",
    responses=error_responses(404, 409),
)  # fmt: skip
def update_key_expiry(
    key_id: KeyId, body: KeyExpiryUpdate, session: SessionDep, admin: AdminDep
) -> KeyInfo:
    """`{"expires_at": "<time>"}`, `{"expires_in_s": N}` or `{"expires_at": null}` (never).
    A revoked key is 409."""
    expires_at = resolve_expiry(body.expires_at, body.expires_in_s)
    with domain_errors():
        return users.key_info(users.set_key_expiry(session, key_id, expires_at, actor=admin.name))


# --- audit log and trusted models ----------------------------------------------------------


def _filter(description: str) -> Any:
    return Query(description=description, max_length=256, pattern=PRINTABLE_PATTERN)


@router.get("/audit", response_model=AuditList, summary="The audit log, newest first")
def list_audit(
    session: SessionDep, admin: AdminDep,
    actor: Annotated[str | None, _filter("Only entries by this actor.")] = None,
    action: Annotated[str | None, _filter("Only this action, e.g. 'job.submit'.")] = None,
    target: Annotated[str | None, _filter("Only entries about this job, key id, user...")] = None,
    limit: Limit = 50, offset: Offset = 0,
) -> AuditList:  # fmt: skip
    """Job submissions and cancellations, key, user and trusted-model changes."""
    rows, total = users.list_audit(
        session, actor=actor, action=action, target=target, limit=limit, offset=offset
    )
    return AuditList(entries=[users.audit_entry(r) for r in rows], total=total)


@router.get("/trusted-models", response_model=TrustedModelList, summary="List trusted models")
def list_trusted_models(session: SessionDep, admin: AdminDep) -> TrustedModelList:
    """The models allowed to run with `trust_remote_code`."""
    rows = users.list_trusted_models(session)
    return TrustedModelList(models=[users.trusted_model_info(r) for r in rows])


@router.post(
    "/trusted-models", response_model=TrustedModel, status_code=status.HTTP_201_CREATED,
    summary="Trust a model's remote code",
)  # fmt: skip
def trust_model(body: TrustedModelCreate, session: SessionDep, admin: AdminDep) -> TrustedModel:
    """Allow jobs to load `model` with `trust_remote_code: true` (already trusted: unchanged)."""
    return users.trusted_model_info(users.trust_model(session, body.model, actor=admin.name))


@router.delete(
    "/trusted-models", status_code=status.HTTP_204_NO_CONTENT,
    summary="Stop trusting a model's remote code", responses=error_responses(404),
)  # fmt: skip
def untrust_model(
    session: SessionDep, admin: AdminDep,
    model: Annotated[str, Query(description="The trusted model.", min_length=1, max_length=512,
                                pattern=PRINTABLE_PATTERN)],
) -> Response:  # fmt: skip
    """Jobs asking `trust_remote_code` for `model` are refused again."""
    with domain_errors():
        users.untrust_model(session, model, actor=admin.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
