"""`client.admin`: users, roles and quotas, API keys, the audit log, trusted models.

Every call needs an admin key (`PermissionDeniedError` otherwise).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from reprlab.client._base import Transport
from reprlab.schemas.users import (
    AuditList,
    KeyInfo,
    KeyList,
    NewKey,
    Role,
    TrustedModel,
    TrustedModelList,
    UserInfo,
    UserList,
)


class _Unset:
    """Marks an argument left out (as opposed to None, which means "the server default")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _seconds(expires_in: timedelta | float) -> int:
    return int(expires_in.total_seconds() if isinstance(expires_in, timedelta) else expires_in)


def _user_path(name: str) -> str:
    return f"/v1/admin/users/{quote(name, safe='')}"


class Admin:
    """Administration over REST (`client.admin`); the CLI's `reprlab admin` does the same
    directly on the server's database."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    # --- users ---------------------------------------------------------------------------------

    def list_users(self, limit: int = 500, offset: int = 0) -> UserList:
        """Every user by name, with role, state and quotas."""
        params = {"limit": limit, "offset": offset}
        return UserList.model_validate(
            self._t.request("GET", "/v1/admin/users", params=params).json()
        )

    def get_user(self, name: str) -> UserInfo:
        """One user (`NotFoundError` if unknown)."""
        return UserInfo.model_validate(self._t.request("GET", _user_path(name)).json())

    def create_user(
        self, name: str, role: Role | str = Role.MEMBER, *, max_running_jobs: int | None = None,
        max_queued_jobs: int | None = None,
    ) -> UserInfo:  # fmt: skip
        """A new user (`ConflictError` if the name is taken); quotas None: server defaults."""
        body = {"name": name, "role": str(Role(role)), "max_running_jobs": max_running_jobs,
                "max_queued_jobs": max_queued_jobs}  # fmt: skip
        return UserInfo.model_validate(self._t.request("POST", "/v1/admin/users", json=body).json())

    def update_user(
        self, name: str, *, role: Role | str | None = None, disabled: bool | None = None,
        max_running_jobs: int | None = UNSET, max_queued_jobs: int | None = UNSET,
    ) -> UserInfo:  # fmt: skip
        """Change what is given: role, disabled, and the quota overrides (None: back to the
        server default; left out: unchanged)."""
        body: dict[str, Any] = {}
        if role is not None:
            body["role"] = str(Role(role))
        if disabled is not None:
            body["disabled"] = disabled
        for field, value in (("max_running_jobs", max_running_jobs),
                             ("max_queued_jobs", max_queued_jobs)):  # fmt: skip
            if value is not UNSET:
                body[field] = value
        response = self._t.request("PATCH", _user_path(name), json=body, idempotent=True)
        return UserInfo.model_validate(response.json())

    def set_role(self, name: str, role: Role | str) -> UserInfo:
        """Make `name` an admin or a member."""
        return self.update_user(name, role=role)

    def disable_user(self, name: str) -> UserInfo:
        """Refuse every key of `name` until enabled again (their jobs stay)."""
        return self.update_user(name, disabled=True)

    def enable_user(self, name: str) -> UserInfo:
        """Let `name`'s unrevoked, unexpired keys work again."""
        return self.update_user(name, disabled=False)

    # --- keys ----------------------------------------------------------------------------------

    def list_keys(self, user: str | None = None, limit: int = 100, offset: int = 0) -> KeyList:
        """Every key (or `user`'s), newest first: id, prefix, owner, label, state, times."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if user is not None:
            params["user"] = user
        return KeyList.model_validate(
            self._t.request("GET", "/v1/admin/keys", params=params).json()
        )

    def get_key(self, key_id: int) -> KeyInfo:
        """One key's record."""
        return KeyInfo.model_validate(self._t.request("GET", f"/v1/admin/keys/{key_id}").json())

    def create_key(
        self, user: str, *, label: str | None = None, expires_at: datetime | None = None,
        expires_in: timedelta | float | None = None,
    ) -> NewKey:  # fmt: skip
        """A new key for an existing user; `.key` is the secret, shown this once.

        Args:
            expires_at: when it stops working; or `expires_in` (a timedelta or seconds).
        """
        body: dict[str, Any] = {"user": user, "label": label}
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        if expires_in is not None:
            body["expires_in_s"] = _seconds(expires_in)
        return NewKey.model_validate(self._t.request("POST", "/v1/admin/keys", json=body).json())

    def revoke_key(self, key_id: int) -> KeyInfo:
        """Stop a key working, for good."""
        response = self._t.request("POST", f"/v1/admin/keys/{key_id}/revoke", idempotent=True)
        return KeyInfo.model_validate(response.json())

    def set_key_expiry(
        self, key_id: int, expires_at: datetime | None = None, *,
        expires_in: timedelta | float | None = None,
    ) -> KeyInfo:  # fmt: skip
        """Expire a key at `expires_at` or after `expires_in`; neither: it never expires."""
        body: dict[str, Any] = (
            {"expires_in_s": _seconds(expires_in)} if expires_in is not None
            else {"expires_at": expires_at.isoformat() if expires_at is not None else None}
        )  # fmt: skip
        response = self._t.request("PATCH", f"/v1/admin/keys/{key_id}", json=body, idempotent=True)
        return KeyInfo.model_validate(response.json())

    # --- audit log and trusted models ----------------------------------------------------------

    def audit(
        self, *, actor: str | None = None, action: str | None = None, target: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> AuditList:  # fmt: skip
        """A page of the audit log, newest first, optionally filtered."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        for name, value in (("actor", actor), ("action", action), ("target", target)):
            if value is not None:
                params[name] = value
        return AuditList.model_validate(
            self._t.request("GET", "/v1/admin/audit", params=params).json()
        )

    def trusted_models(self) -> list[TrustedModel]:
        """The models allowed to run with `trust_remote_code`."""
        data = self._t.request("GET", "/v1/admin/trusted-models").json()
        return TrustedModelList.model_validate(data).models

    def trust_model(self, model: str) -> TrustedModel:
        """Allow `model` (as written in specs' `model.name`) to run with `trust_remote_code`."""
        response = self._t.request(
            "POST", "/v1/admin/trusted-models", json={"model": model}, idempotent=True
        )
        return TrustedModel.model_validate(response.json())

    def untrust_model(self, model: str) -> None:
        """Withdraw the permission (`NotFoundError` if `model` is not trusted)."""
        self._t.request("DELETE", "/v1/admin/trusted-models", params={"model": model})
