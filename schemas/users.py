"""Users, API keys, the audit log and trusted models as the admin API and the SDK see them."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from reprlab.schemas._base import ResponseModel, StrictModel

USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"
USER_NAME_RULE = "1 to 128 letters, digits and . _ @ + -, starting with a letter or digit"
# Free text stored in the database: no control characters (PostgreSQL refuses NUL).
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
MAX_QUOTA = 10_000
MAX_KEY_LIFETIME_S = 100 * 365 * 86_400


class Role(StrEnum):
    """`admin`: sees and manages every job, user and key. `member`: only their own jobs."""

    ADMIN = "admin"
    MEMBER = "member"


KeyState = Literal["active", "revoked", "expired"]


def _utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime (a naive one is taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


# --- requests ----------------------------------------------------------------------------------


class UserCreate(StrictModel):
    """A new user."""

    name: str = Field(description=f"User name: {USER_NAME_RULE}.", pattern=USER_NAME_PATTERN)
    role: Role = Field(default=Role.MEMBER, description="'admin' or 'member'.")
    max_running_jobs: int | None = Field(
        default=None, ge=1, le=MAX_QUOTA,
        description="Jobs the user may have running at once; null: the server default.",
    )  # fmt: skip
    max_queued_jobs: int | None = Field(
        default=None, ge=1, le=MAX_QUOTA,
        description="Jobs the user may have waiting; null: the server default.",
    )  # fmt: skip


class UserUpdate(StrictModel):
    """Changes to a user; a field left out stays as it is."""

    role: Role | None = Field(default=None, description="New role (null: unchanged).")
    disabled: bool | None = Field(
        default=None,
        description="true: the user's keys stop working; false: they work again (null: unchanged).",
    )
    max_running_jobs: int | None = Field(
        default=None, ge=1, le=MAX_QUOTA,
        description="Running-jobs quota; null: back to the server default.",
    )  # fmt: skip
    max_queued_jobs: int | None = Field(
        default=None, ge=1, le=MAX_QUOTA,
        description="Queued-jobs quota; null: back to the server default.",
    )  # fmt: skip


class KeyCreate(StrictModel):
    """A new API key for an existing user (at most one of `expires_at` and `expires_in_s`)."""

    user: str = Field(description="The user the key belongs to.", pattern=USER_NAME_PATTERN)
    label: str | None = Field(
        default=None, max_length=128, pattern=PRINTABLE_PATTERN,
        description="A note to recognise the key by, e.g. 'laptop' or 'ci'.",
    )  # fmt: skip
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working (UTC if no offset); null: never."
    )
    expires_in_s: int | None = Field(
        default=None, ge=60, le=MAX_KEY_LIFETIME_S,
        description="Alternatively, the key's lifetime in seconds from now.",
    )  # fmt: skip

    @field_validator("expires_at")
    @classmethod
    def _expiry_utc(cls, v: datetime | None) -> datetime | None:
        return _utc(v)

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyCreate:
        if self.expires_at is not None and self.expires_in_s is not None:
            raise ValueError("give expires_at or expires_in_s, not both")
        return self


class KeyExpiryUpdate(StrictModel):
    """A key's new expiry: exactly one of `expires_at` (null clears it) and `expires_in_s`."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    expires_at: datetime | None = Field(
        default=None, description="New expiry (UTC if no offset); null: the key never expires."
    )
    expires_in_s: int | None = Field(
        default=None, ge=60, le=MAX_KEY_LIFETIME_S,
        description="Alternatively, expire this many seconds from now.",
    )  # fmt: skip

    @field_validator("expires_at")
    @classmethod
    def _expiry_utc(cls, v: datetime | None) -> datetime | None:
        return _utc(v)

    @model_validator(mode="after")
    def _exactly_one(self) -> KeyExpiryUpdate:
        given = {"expires_at", "expires_in_s"} & self.model_fields_set
        if len(given) != 1:
            raise ValueError(
                "give exactly one of expires_at (a time, or null for never) and expires_in_s"
            )
        if "expires_in_s" in given and self.expires_in_s is None:
            raise ValueError("expires_in_s must be a number of seconds; to clear, expires_at: null")
        return self


class TrustedModelCreate(StrictModel):
    """A model to allow with `trust_remote_code`."""

    model: str = Field(
        min_length=1, max_length=512, pattern=PRINTABLE_PATTERN,
        description="The hub id or local path exactly as job specs write it in `model.name`.",
    )  # fmt: skip


# --- responses ---------------------------------------------------------------------------------


class UserInfo(ResponseModel):
    """A user, their role, state and quotas."""

    name: str = Field(description="User name.")
    role: Role = Field(description="'admin' or 'member'.")
    created_at: datetime = Field(description="When the user was created (UTC).")
    disabled_at: datetime | None = Field(
        default=None, description="When the user was disabled (their keys refused); null: enabled."
    )
    max_running_jobs: int | None = Field(
        default=None, description="Per-user running-jobs quota; null: the server default."
    )
    max_queued_jobs: int | None = Field(
        default=None, description="Per-user queued-jobs quota; null: the server default."
    )
    effective_max_running_jobs: int = Field(description="The running-jobs quota that applies.")
    effective_max_queued_jobs: int = Field(description="The queued-jobs quota that applies.")


class UserList(ResponseModel):
    """A page of users, by name."""

    users: list[UserInfo] = Field(description="The users on this page.")
    total: int = Field(description="Number of users.")


class KeyInfo(ResponseModel):
    """An API key's record (never the key itself nor its hash)."""

    id: int = Field(description="Key id (used to revoke it or change its expiry).")
    prefix: str = Field(description="The key's first characters, to recognise it.")
    owner: str = Field(description="The user the key authenticates as.")
    label: str | None = Field(default=None, description="A note set at creation.")
    state: KeyState = Field(description="'active', 'revoked' or 'expired'.")
    created_at: datetime = Field(description="Creation time (UTC).")
    created_by: str | None = Field(default=None, description="Who created it.")
    expires_at: datetime | None = Field(default=None, description="Expiry (UTC); null: never.")
    revoked_at: datetime | None = Field(default=None, description="Revocation time, if revoked.")
    last_used_at: datetime | None = Field(
        default=None, description="Last authenticated request (updated at most once a minute)."
    )


class NewKey(KeyInfo):
    """A freshly created key: `key` is shown this once and stored only as a hash."""

    key: str = Field(description="The API key; pass it as 'Authorization: Bearer <key>'.")


class KeyList(ResponseModel):
    """A page of keys, newest first."""

    keys: list[KeyInfo] = Field(description="The keys on this page.")
    total: int = Field(description="Number of keys matching the query.")


class AuditEntry(ResponseModel):
    """One audited action."""

    id: int = Field(description="Entry id (increasing).")
    at: datetime = Field(description="When (UTC).")
    actor: str = Field(description="Who: a user name, or 'cli:<os user>' for the admin CLI.")
    action: str = Field(description="What, e.g. 'job.submit', 'key.revoke', 'user.role'.")
    target: str = Field(description="On what: a job id, key id, user name or model.")
    detail: dict[str, Any] = Field(description="Action-specific detail, e.g. old and new role.")


class AuditList(ResponseModel):
    """A page of the audit log, newest first."""

    entries: list[AuditEntry] = Field(description="The entries on this page.")
    total: int = Field(description="Number of entries matching the query.")


class TrustedModel(ResponseModel):
    """A model an admin allowed to run with `trust_remote_code`."""

    model: str = Field(description="Hub id or local path as written in job specs.")
    allowed_by: str = Field(description="Who allowed it.")
    allowed_at: datetime = Field(description="When (UTC).")


class TrustedModelList(ResponseModel):
    """Every trusted model, by name."""

    models: list[TrustedModel] = Field(description="The trusted models.")


class Me(ResponseModel):
    """The caller: who the API key authenticates as."""

    name: str = Field(description="User name.")
    role: Role = Field(description="'admin' or 'member'.")
    key_id: int | None = Field(default=None, description="Id of the key used for this request.")
    max_running_jobs: int = Field(description="Jobs you may have running at once.")
    max_queued_jobs: int = Field(description="Jobs you may have waiting.")
