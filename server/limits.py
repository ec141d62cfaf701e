"""What a job submission may ask for: per-job limits, model and path policy, per-user quotas.

`check_submission` runs in `POST /v1/jobs` before the job is stored. Each refusal is an
`APIError` whose message names the limit (its setting) and the value allowed:

- 422 `LimitExceeded`: the spec asks for more than a per-job limit (items, tokens per prompt,
  layers, conditions, checkpoints, training steps).
- 403 `Forbidden`: a hub id outside `model_allowlist`, a local model or dataset path outside
  its roots (or with `..`), `trust_remote_code` for a model no admin trusts.
- 429 `QuotaExceeded`: the user already has as many jobs waiting (or active) as allowed. No
  `Retry-After`: the quota frees up when the user's jobs start or finish.

The quota check locks the user's row (`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite a write
that takes the database's single writer lock) until the transaction that inserts the job
commits, so two racing submissions cannot both pass the last free slot.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from reprlab.schemas.datasets import FileDataset, HFDataset
from reprlab.schemas.jobs import JobStatus
from reprlab.schemas.specs import (
    ConcreteCondition,
    ICLCondition,
    InlineDataset,
    JobSpec,
    JsonlDataset,
    SFTCondition,
)
from reprlab.server import users
from reprlab.server.config import Settings
from reprlab.server.errors import APIError
from reprlab.server.models import JobRow, UserRow
from reprlab.server.paths import PathNotAllowed, resolve_under_roots

LIMIT_HINT = "ask for less, split the work into several jobs, or ask the admin to raise the limit"


def check_submission(s: Session, caller: users.Caller, spec: JobSpec, settings: Settings) -> None:
    """Refuse a job the server will not run; on success the user's row stays locked until the
    session commits (the caller inserts the job and commits).

    Raises:
        APIError: 422 LimitExceeded, 403 Forbidden or 429 QuotaExceeded (see the module doc).
    """
    check_job_limits(spec, settings)
    check_model(s, spec, settings)
    check_dataset_path(spec, settings)
    check_quotas(s, caller.name, settings)


# --- per-job limits ----------------------------------------------------------------------------


def _too_much(what: str, asked: int, setting: str, allowed: int, hint: str = LIMIT_HINT) -> None:
    if asked > allowed:
        raise APIError(
            422, "LimitExceeded",
            f"{what} is {asked}, more than this server allows: {setting} = {allowed}", hint,
        )  # fmt: skip


def train_steps(cond: SFTCondition, n_train: int) -> int:
    """Optimiser steps of a concrete SFT condition, as the worker counts them (an upper bound:
    an inline dataset may hold fewer training items than `n_train`)."""
    if cond.steps is not None:
        return cond.steps
    n_items = cond.k_value if cond.train_on == "demos" else n_train
    return cond.epochs * math.ceil(max(n_items, 1) / cond.batch_size)


def check_job_limits(spec: JobSpec, settings: Settings) -> None:
    """422 `LimitExceeded` naming the first per-job limit the spec exceeds."""
    data = spec.dataset
    _too_much("dataset.n_eval + dataset.n_train", data.n_eval + data.n_train,
              "max_items", settings.max_items)  # fmt: skip
    if isinstance(data, InlineDataset):
        _too_much("the number of inline dataset.items", len(data.items),
                  "max_items", settings.max_items)  # fmt: skip
    tokens_hint = "shorten the prompts (fewer demonstrations k, shorter items) or ask the admin"
    _too_much("extraction.max_length (tokens per prompt)", spec.extraction.max_length,
              "max_prompt_tokens", settings.max_prompt_tokens, tokens_hint)  # fmt: skip
    if isinstance(spec.extraction.layers, list):
        _too_much("the number of extraction.layers", len(spec.extraction.layers),
                  "max_layers", settings.max_layers)  # fmt: skip
    n_concrete = sum(_n_values(c.k) * _n_values(c.seed) for c in spec.conditions)
    _too_much("the number of conditions after k/seed sweeps", n_concrete,
              "max_conditions", settings.max_conditions)  # fmt: skip
    concrete: list[ConcreteCondition] = [e for c in spec.conditions for e in c.expand()]
    sft = [c for c in concrete if isinstance(c, SFTCondition)]
    for cond in sft:
        _too_much(f"conditions[{cond.group!r}].max_length (tokens per training text)",
                  cond.max_length, "max_prompt_tokens", settings.max_prompt_tokens,
                  tokens_hint)  # fmt: skip
    _too_much("the number of SFT checkpoints after sweeps", sum(len(c.checkpoints) for c in sft),
              "max_checkpoints", settings.max_checkpoints)  # fmt: skip
    steps = {c.name: train_steps(c, data.n_train) for c in sft}
    _too_much(_steps_what(steps), sum(steps.values()), "max_train_steps",
              settings.max_train_steps, "set fewer steps or epochs, a larger batch_size, or "
              "fewer seeds; or ask the admin to raise the limit")  # fmt: skip


def _n_values(value: int | list[int]) -> int:
    return len(value) if isinstance(value, list) else 1


def _steps_what(steps: dict[str, int]) -> str:
    largest = sorted(steps.items(), key=lambda kv: -kv[1])[:3]
    shown = ", ".join(f"{name}: {n}" for name, n in largest)
    more = ", ..." if len(steps) > 3 else ""
    return f"the optimiser steps of all SFT conditions together ({shown}{more})"


# --- models and paths --------------------------------------------------------------------------


def model_kind(name: str) -> Literal["local", "hub", "builtin"]:
    """How the worker reads `ModelRef.name` (as `worker.models.resolve_model` does): a path
    ('/', '.' or '~' first), a hub id ('org/name'), else a built-in name (an unknown one is
    the worker's clear job error)."""
    if name.startswith(("/", ".", "~")):
        return "local"
    if name.count("/") == 1 and all(name.split("/")):
        return "hub"
    return "builtin"


def check_model(s: Session, spec: JobSpec, settings: Settings) -> None:
    """403 for a model the server does not allow, or remote code no admin trusts."""
    name = spec.model.name
    kind = model_kind(name)
    if kind == "local":
        try:
            resolve_under_roots(
                name, settings.model_roots, what="model directory", kind="model",
                setting="REPRLAB_MODEL_ROOTS", search_roots=False,
            )  # fmt: skip
        except PathNotAllowed as exc:
            raise APIError(403, "Forbidden", exc.message, exc.hint) from None
    elif kind == "hub" and not any(fnmatchcase(name, p) for p in settings.model_allowlist):
        patterns = ", ".join(settings.model_allowlist) or "none: hub ids are off"
        raise APIError(
            403, "Forbidden",
            f"hub model {name!r} is not in this server's model allow-list "
            f"(model_allowlist: {patterns})",
            "use a built-in model (e.g. 'smollm2-135m-instruct') or a model directory under the "
            "model roots, or ask the admin to add a pattern to REPRLAB_MODEL_ALLOWLIST",
        )  # fmt: skip
    if spec.model.trust_remote_code and not users.is_model_trusted(s, name):
        raise APIError(
            403, "Forbidden",
            f"model.trust_remote_code is true, but no admin has trusted {name!r} to run its own "
            "code on the workers",
            f"leave trust_remote_code out, or ask an admin to run `reprlab admin trust-model "
            f"{name}`",
        )  # fmt: skip


def check_dataset_path(spec: JobSpec, settings: Settings) -> None:
    """403 for a path the job reads (a dataset's JSONL, file or save_to_disk directory, also a
    condition's `demo_dataset`, and a `demos_file`) outside the data roots (the worker checks
    them again)."""
    for field, data in spec.dataset_specs():
        if isinstance(data, (JsonlDataset, FileDataset, HFDataset)) and data.path is not None:
            hint = "let the SDK upload a local file (it sends the items inline)"
            if isinstance(data, FileDataset):
                hint = (f"upload the file (`reprlab datasets upload PATH`) and give "
                        f"{field}.upload = the id it prints")  # fmt: skip
            _check_data_path(data.path, f"{field} path", hint, settings)
    for c in spec.conditions:
        if isinstance(c, ICLCondition) and c.demos_file is not None:
            hint = "let the SDK inline a local file into `demos`"
            _check_data_path(c.demos_file, f"conditions.{c.name}.demos_file", hint, settings)


def _check_data_path(raw: str, what: str, hint: str, settings: Settings) -> None:
    try:
        resolve_under_roots(
            raw, settings.data_roots, what=what, kind="data",
            setting="REPRLAB_DATA_ROOTS", search_roots=True,
        )  # fmt: skip
    except PathNotAllowed as exc:
        raise APIError(403, "Forbidden", exc.message, f"{exc.hint}; or {hint}") from None


# --- quotas ------------------------------------------------------------------------------------


def lock_user(s: Session, name: str) -> UserRow | None:
    """The user's row, locked until the session's transaction ends."""
    if s.get_bind().dialect.name == "sqlite":
        # SQLite has no row locks: a write as the transaction's first statement takes the
        # database's writer lock (waiting for it, up to the busy timeout) and holds it to commit.
        s.execute(
            update(UserRow).where(UserRow.name == name).values(name=UserRow.name)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
    return s.scalar(
        select(UserRow).where(UserRow.name == name).with_for_update()
        .execution_options(populate_existing=True)
    )  # fmt: skip


def job_counts(s: Session, owner: str) -> dict[JobStatus, int]:
    """How many of the owner's jobs are queued and running."""
    rows = s.execute(
        select(JobRow.status, func.count())
        .where(JobRow.owner == owner,
               JobRow.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
        .group_by(JobRow.status)
    ).all()  # fmt: skip
    counts = {JobStatus.QUEUED: 0, JobStatus.RUNNING: 0}
    for status, n in rows:
        counts[JobStatus(status)] = int(n)
    return counts


def check_quotas(s: Session, owner: str, settings: Settings) -> None:
    """429 `QuotaExceeded` when the owner's queued (or queued + running) jobs are at quota.

    Locks the owner's row first; the lock is held until the caller's commit (or rollback).
    """
    user = lock_user(s, owner)
    max_running, max_queued = users.effective_quotas(
        user, settings.max_running_jobs, settings.max_queued_jobs
    )
    counts = job_counts(s, owner)
    queued, running = counts[JobStatus.QUEUED], counts[JobStatus.RUNNING]
    hint = ("wait until some of your jobs start or finish, or cancel queued ones (`reprlab "
            "cancel ID`); an admin can raise your quota")  # fmt: skip
    if queued >= max_queued:
        s.rollback()
        raise APIError(
            429, "QuotaExceeded",
            f"quota max_queued_jobs reached: you have {queued} queued jobs and at most "
            f"{max_queued} may wait at once",
            hint,
        )  # fmt: skip
    if queued + running >= max_queued + max_running:
        s.rollback()
        raise APIError(
            429, "QuotaExceeded",
            f"active job quota reached: you have {running} running and {queued} queued jobs, "
            f"and at most max_running_jobs + max_queued_jobs = {max_running} + {max_queued} "
            "may be active at once",
            hint,
        )  # fmt: skip
