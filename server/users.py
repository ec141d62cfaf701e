"""Users, their roles and their API keys: creation, authentication, the audit log.

A user is a name with a role: `admin` (sees and manages every job, user and key) or `member`
(sees only their own jobs). Keys are random 256-bit tokens stored only as their sha256; a key
can be revoked or given an expiry, and a disabled user's keys stop working.

Every change here is audited in the same transaction as the change itself: each function adds
its `AuditRow` and commits once. `actor` is the caller's user name, or `cli:<os user>` for the
admin CLI on the server machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, func, or_, select, update
from sqlalchemy.orm import Session

from reprlab.schemas.specs import JobSpec
from reprlab.schemas.users import (
    USER_NAME_PATTERN,
    USER_NAME_RULE,
    AuditEntry,
    KeyInfo,
    KeyState,
    Role,
    TrustedModel,
    UserInfo,
    UserUpdate,
)
from reprlab.server.auth import hash_api_key, new_api_key
from reprlab.server.models import ApiKeyRow, AuditRow, JobRow, TrustedModelRow, UserRow, utcnow

# `last_used_at` is a hint for admins, not a log: one write per key per minute at most.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_USER_NAME = re.compile(USER_NAME_PATTERN)


class NotFoundError(LookupError):
    """No such user, key or trusted model (HTTP 404)."""


class ConflictError(ValueError):
    """The change contradicts the current state, e.g. a user that already exists (HTTP 409)."""


@dataclass(frozen=True)
class Caller:
    """Who made a request: the user's name and role, and the id of the key they used."""

    name: str
    role: Role
    key_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def owner_filter(self) -> str | None:
        """The owner a job query is restricted to: the caller, or nobody for an admin."""
        return None if self.is_admin else self.name


def check_user_name(name: str) -> str:
    """`name` if it is a valid user name.

    Raises:
        ValueError: not 1 to 128 letters, digits and `._@+-` (a letter or digit first).
    """
    if not _USER_NAME.fullmatch(name):
        raise ValueError(f"invalid user name {name!r}: use {USER_NAME_RULE}")
    return name


def audit(
    s: Session, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None
) -> None:
    """Record an action in the audit log (the caller commits, with the action itself)."""
    s.add(AuditRow(at=utcnow(), actor=actor, action=action, target=target, detail=detail or {}))


# --- users -------------------------------------------------------------------------------------


def get_user(s: Session, name: str) -> UserRow | None:
    """The user called `name`, or None."""
    return s.scalar(select(UserRow).where(UserRow.name == name))


def require_user(s: Session, name: str) -> UserRow:
    """The user called `name`.

    Raises:
        NotFoundError: no such user.
    """
    user = get_user(s, name)
    if user is None:
        raise NotFoundError(f"no user {name!r}")
    return user


def ensure_user(
    s: Session, name: str, role: Role | None = None, *, actor: str = "system"
) -> UserRow:
    """The user `name`, created as a member (or `role`) if new; `role` also updates an old one.

    Creation and role change are audited; the caller commits.
    """
    check_user_name(name)
    user = get_user(s, name)
    if user is None:
        role = role or Role.MEMBER
        user = UserRow(name=name, role=role.value, created_at=utcnow())
        s.add(user)
        s.flush()
        audit(s, actor, "user.create", name, {"role": role.value})
    elif role is not None and user.role != role.value:
        audit(s, actor, "user.role", name, {"from": user.role, "to": role.value})
        user.role = role.value
    return user


def create_user(
    s: Session, name: str, role: Role = Role.MEMBER, *, actor: str,
    max_running_jobs: int | None = None, max_queued_jobs: int | None = None,
) -> UserRow:  # fmt: skip
    """Create a user.

    Raises:
        ValueError: invalid name.
        ConflictError: the user exists.
    """
    check_user_name(name)
    if get_user(s, name) is not None:
        raise ConflictError(f"user {name!r} already exists")
    user = ensure_user(s, name, role, actor=actor)
    user.max_running_jobs, user.max_queued_jobs = max_running_jobs, max_queued_jobs
    quotas = {"max_running_jobs": max_running_jobs, "max_queued_jobs": max_queued_jobs}
    if any(v is not None for v in quotas.values()):
        audit(s, actor, "user.quota", name, quotas)
    s.commit()
    return user


def list_users(s: Session, *, limit: int = 500, offset: int = 0) -> tuple[list[UserRow], int]:
    """A page of users by name, and how many there are."""
    rows = s.scalars(select(UserRow).order_by(UserRow.name).limit(limit).offset(offset)).all()
    return list(rows), int(s.scalar(select(func.count()).select_from(UserRow)) or 0)


def update_user(s: Session, name: str, changes: UserUpdate, *, actor: str) -> UserRow:
    """Apply the fields set in `changes` (role, disabled, quota overrides; a null quota means the
    server default), auditing each real change.

    Raises:
        NotFoundError: no such user.
    """
    user = require_user(s, name)
    given = changes.model_fields_set
    if changes.role is not None and changes.role.value != user.role:
        audit(s, actor, "user.role", name, {"from": user.role, "to": changes.role.value})
        user.role = changes.role.value
    if changes.disabled is not None and changes.disabled != (user.disabled_at is not None):
        audit(s, actor, "user.disable" if changes.disabled else "user.enable", name)
        user.disabled_at = utcnow() if changes.disabled else None
    quotas: dict[str, Any] = {}
    for field in ("max_running_jobs", "max_queued_jobs"):
        new = getattr(changes, field)
        if field in given and getattr(user, field) != new:
            quotas[field] = {"from": getattr(user, field), "to": new}
            setattr(user, field, new)
    if quotas:
        audit(s, actor, "user.quota", name, quotas)
    s.commit()
    return user


def effective_quotas(user: UserRow | None, running: int, queued: int) -> tuple[int, int]:
    """The user's (running, queued) job quotas: their overrides, else the server defaults."""
    if user is None:
        return running, queued
    return (
        user.max_running_jobs if user.max_running_jobs is not None else running,
        user.max_queued_jobs if user.max_queued_jobs is not None else queued,
    )


def user_info(user: UserRow, *, default_running: int, default_queued: int) -> UserInfo:
    """The API view of a user, with the quotas that apply to them."""
    running, queued = effective_quotas(user, default_running, default_queued)
    return UserInfo(
        name=user.name, role=Role(user.role), created_at=user.created_at,
        disabled_at=user.disabled_at, max_running_jobs=user.max_running_jobs,
        max_queued_jobs=user.max_queued_jobs, effective_max_running_jobs=running,
        effective_max_queued_jobs=queued,
    )  # fmt: skip


# --- keys --------------------------------------------------------------------------------------


def issue_key(
    s: Session, owner: str, *, role: Role | None = None, label: str | None = None,
    expires_at: datetime | None = None, created_by: str | None = None,
) -> tuple[ApiKeyRow, str]:  # fmt: skip
    """Create a key for `owner` (creating the user if new, setting `role` if given): its row
    and the key itself, which exists nowhere else (only its hash is stored).

    Raises:
        ValueError: `owner` is not a valid user name.
    """
    actor = created_by or "system"
    ensure_user(s, owner, role, actor=actor)
    key = new_api_key()
    row = ApiKeyRow(
        owner=owner, key_hash=hash_api_key(key), prefix=key[:8], created_at=utcnow(),
        label=label, expires_at=expires_at, created_by=created_by,
    )  # fmt: skip
    s.add(row)
    s.flush()
    detail: dict[str, Any] = {"owner": owner, "prefix": row.prefix, "label": label}
    detail["expires_at"] = expires_at.isoformat() if expires_at is not None else None
    audit(s, actor, "key.create", str(row.id), detail)
    s.commit()
    return row, key


def create_api_key(
    s: Session, owner: str, *, role: Role | None = None, label: str | None = None,
    expires_at: datetime | None = None, created_by: str | None = None,
) -> str:  # fmt: skip
    """Create a key for `owner` (creating the user if new); returned once, stored hashed.

    Raises:
        ValueError: `owner` is not a valid user name.
    """
    _, key = issue_key(
        s, owner, role=role, label=label, expires_at=expires_at, created_by=created_by
    )
    return key


def get_key(s: Session, key_id: int) -> ApiKeyRow:
    """A key by id.

    Raises:
        NotFoundError: no such key.
    """
    row = s.get(ApiKeyRow, key_id)
    if row is None:
        raise NotFoundError(f"no API key with id {key_id}")
    return row


def list_keys(
    s: Session, owner: str | None = None, *, limit: int = 500, offset: int = 0
) -> tuple[list[ApiKeyRow], int]:
    """A page of keys (of `owner`, or everyone's), newest first, and how many match."""
    query, count = select(ApiKeyRow), select(func.count()).select_from(ApiKeyRow)
    if owner is not None:
        query, count = query.where(ApiKeyRow.owner == owner), count.where(ApiKeyRow.owner == owner)
    rows = s.scalars(
        query.order_by(ApiKeyRow.created_at.desc(), ApiKeyRow.id.desc()).limit(limit).offset(offset)
    ).all()
    return list(rows), int(s.scalar(count) or 0)


def revoke_key(s: Session, key_id: int, *, actor: str) -> ApiKeyRow:
    """Revoke a key for good (revoking a revoked key changes nothing).

    Raises:
        NotFoundError: no such key.
    """
    row = get_key(s, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit(s, actor, "key.revoke", str(key_id), {"owner": row.owner, "prefix": row.prefix})
        s.commit()
    return row


def set_key_expiry(
    s: Session, key_id: int, expires_at: datetime | None, *, actor: str
) -> ApiKeyRow:
    """Set (or with None clear) a key's expiry.

    Raises:
        NotFoundError: no such key.
        ConflictError: the key is revoked (a revoked key never works again).
    """
    row = get_key(s, key_id)
    if row.revoked_at is not None:
        raise ConflictError(f"API key {key_id} is revoked; its expiry no longer matters")
    if row.expires_at != expires_at:
        old = row.expires_at.isoformat() if row.expires_at is not None else None
        new = expires_at.isoformat() if expires_at is not None else None
        audit(s, actor, "key.expiry", str(key_id), {"owner": row.owner, "from": old, "to": new})
        row.expires_at = expires_at
        s.commit()
    return row


def key_state(row: ApiKeyRow, now: datetime | None = None) -> KeyState:
    """'revoked', 'expired' or 'active'."""
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def key_info(row: ApiKeyRow) -> KeyInfo:
    """The API view of a key: never the hash."""
    return KeyInfo(
        id=row.id, prefix=row.prefix, owner=row.owner, label=row.label, state=key_state(row),
        created_at=row.created_at, created_by=row.created_by, expires_at=row.expires_at,
        revoked_at=row.revoked_at, last_used_at=row.last_used_at,
    )  # fmt: skip


def authenticate(s: Session, key: str) -> Caller | None:
    """The caller holding `key`; None for an unknown, revoked or expired key or disabled user.

    Records the key's `last_used_at`, at most once per `LAST_USED_RESOLUTION`.
    """
    if not key:
        return None
    row = s.execute(
        select(ApiKeyRow, UserRow)
        .join(UserRow, UserRow.name == ApiKeyRow.owner)
        .where(ApiKeyRow.key_hash == hash_api_key(key))
    ).first()
    if row is None:
        return None
    api_key, user = row
    now = utcnow()
    if api_key.revoked_at is not None or user.disabled_at is not None:
        return None
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return None
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        _touch_key(s, api_key.id, now)
    return Caller(name=user.name, role=Role(user.role), key_id=api_key.id)


def _touch_key(s: Session, key_id: int, now: datetime) -> None:
    # Conditional, so concurrent requests (or server processes) write it once between them.
    s.execute(
        update(ApiKeyRow)
        .where(
            ApiKeyRow.id == key_id,
            or_(
                ApiKeyRow.last_used_at.is_(None),
                ApiKeyRow.last_used_at <= now - LAST_USED_RESOLUTION,
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    s.commit()


# --- the audit log -----------------------------------------------------------------------------


def list_audit(
    s: Session, *, actor: str | None = None, action: str | None = None,
    target: str | None = None, limit: int = 50, offset: int = 0,
) -> tuple[list[AuditRow], int]:  # fmt: skip
    """A page of the audit log, newest first, and how many entries match."""
    query, count = select(AuditRow), select(func.count()).select_from(AuditRow)
    for column, value in ((AuditRow.actor, actor), (AuditRow.action, action),
                          (AuditRow.target, target)):  # fmt: skip
        if value is not None:
            query, count = query.where(column == value), count.where(column == value)
    rows = s.scalars(
        query.order_by(AuditRow.at.desc(), AuditRow.id.desc()).limit(limit).offset(offset)
    ).all()
    return list(rows), int(s.scalar(count) or 0)


def audit_entry(row: AuditRow) -> AuditEntry:
    """The API view of an audit row."""
    return AuditEntry(id=row.id, at=row.at, actor=row.actor, action=row.action,
                      target=row.target, detail=dict(row.detail or {}))  # fmt: skip


def job_submission_detail(spec: JobSpec) -> dict[str, Any]:
    """What the audit log keeps of a submitted job."""
    return {
        "name": spec.name,
        "model": spec.model.name,
        "n_conditions": sum(len(c.expand()) for c in spec.conditions),
    }


@contextmanager
def auditing_job_submission(s: Session, actor: str, spec: JobSpec) -> Iterator[None]:
    """Audit the job the block inserts, in the flush that inserts it (so in its transaction):
    `crud.create_job` generates the id and commits, so the entry joins its flush."""
    detail = job_submission_detail(spec)

    def add_entry(session: Session, _context: Any, _instances: Any) -> None:
        for obj in list(session.new):
            if isinstance(obj, JobRow):
                audit(session, actor, "job.submit", obj.id, detail)

    event.listen(s, "before_flush", add_entry)
    try:
        yield
    finally:
        event.remove(s, "before_flush", add_entry)


# --- trusted models ----------------------------------------------------------------------------


def is_model_trusted(s: Session, model: str) -> bool:
    """True if an admin allowed `model` (hub id or local path, as written in specs) to run
    with `trust_remote_code`."""
    return s.get(TrustedModelRow, model) is not None


def list_trusted_models(s: Session) -> list[TrustedModelRow]:
    """Every trusted model, by name."""
    return list(s.scalars(select(TrustedModelRow).order_by(TrustedModelRow.model)).all())


def trust_model(s: Session, model: str, *, actor: str) -> TrustedModelRow:
    """Allow `model` to run with `trust_remote_code` (allowing it again changes nothing)."""
    row = s.get(TrustedModelRow, model)
    if row is None:
        row = TrustedModelRow(model=model, allowed_by=actor, allowed_at=utcnow())
        s.add(row)
        audit(s, actor, "model.trust", model)
        s.commit()
    return row


def untrust_model(s: Session, model: str, *, actor: str) -> None:
    """Withdraw `model`'s permission to run remote code.

    Raises:
        NotFoundError: the model is not trusted.
    """
    row = s.get(TrustedModelRow, model)
    if row is None:
        raise NotFoundError(f"model {model!r} is not in the trusted list")
    s.delete(row)
    audit(s, actor, "model.untrust", model, {"allowed_by": row.allowed_by})
    s.commit()


def trusted_model_info(row: TrustedModelRow) -> TrustedModel:
    """The API view of a trusted model."""
    return TrustedModel(model=row.model, allowed_by=row.allowed_by, allowed_at=row.allowed_at)
