"""Users, their roles and their API keys: creation, authentication, the audit log.

A user is a name with a role: `admin` (sees and manages every job, user and key) or `member`
(sees only their own jobs). Keys are random 256-bit tokens stored only as their sha256; a key
can be revoked or given an expiry, and a disabled user's keys stop working.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from reprlab.server.auth import hash_api_key, new_api_key
from reprlab.server.models import ApiKeyRow, AuditRow, TrustedModelRow, UserRow, utcnow


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


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
        ValueError: empty, longer than 128 characters, or holding control characters.
    """
    if not name.strip() or len(name) > 128 or any(ord(c) < 32 for c in name):
        raise ValueError(f"invalid user name {name!r}: use 1 to 128 printable characters")
    return name


def get_user(s: Session, name: str) -> UserRow | None:
    """The user called `name`, or None."""
    return s.scalar(select(UserRow).where(UserRow.name == name))


def ensure_user(s: Session, name: str, role: Role | None = None) -> UserRow:
    """The user `name`, created as a member (or `role`) if new; `role` also updates an old one.

    The caller commits.
    """
    check_user_name(name)
    user = get_user(s, name)
    if user is None:
        user = UserRow(name=name, role=(role or Role.MEMBER).value, created_at=utcnow())
        s.add(user)
        s.flush()
    elif role is not None and user.role != role.value:
        user.role = role.value
    return user


def create_api_key(
    s: Session, owner: str, *, role: Role | None = None, label: str | None = None,
    expires_at: datetime | None = None, created_by: str | None = None,
) -> str:  # fmt: skip
    """Create a key for `owner` (creating the user if new); returned once, stored hashed.

    Raises:
        ValueError: `owner` is not a valid user name.
    """
    ensure_user(s, owner, role)
    key = new_api_key()
    s.add(
        ApiKeyRow(
            owner=owner, key_hash=hash_api_key(key), prefix=key[:8], created_at=utcnow(),
            label=label, expires_at=expires_at, created_by=created_by,
        )
    )  # fmt: skip
    s.commit()
    return key


def authenticate(s: Session, key: str) -> Caller | None:
    """The caller holding `key`; None for an unknown, revoked or expired key or disabled user."""
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
    return Caller(name=user.name, role=Role(user.role), key_id=api_key.id)


def audit(
    s: Session, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None
) -> None:
    """Record an action in the audit log (the caller commits, with the action itself)."""
    s.add(AuditRow(at=utcnow(), actor=actor, action=action, target=target, detail=detail or {}))


def is_model_trusted(s: Session, model: str) -> bool:
    """True if an admin allowed `model` (hub id or local path, as written in specs) to run
    with `trust_remote_code`."""
    return s.get(TrustedModelRow, model) is not None
