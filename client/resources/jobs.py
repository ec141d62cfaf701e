"""`client.jobs`: submit, follow, cancel jobs; fetch results, artifacts and activations."""

from __future__ import annotations

import builtins
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, Field

from reprlab.client._base import Transport
from reprlab.client._exceptions import (
    APIConnectionError,
    InternalServerError,
    JobCancelledError,
    JobFailedError,
    WaitTimeoutError,
)
from reprlab.schemas.demos import parse_demos_file
from reprlab.schemas.jobs import Job, JobList, JobStatus
from reprlab.schemas.jsonl import parse_jsonl
from reprlab.schemas.results import JobResults, PromptsFile
from reprlab.schemas.specs import JobSpec


class ArtifactInfo(BaseModel):
    """A downloadable artifact of a job."""

    name: str = Field(description="Artifact name, e.g. 'plots/id_twonn.png'.")
    size: int = Field(description="Size in bytes.")
    media_type: str = Field(description="MIME type.")


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """A spec dict from a YAML or JSON file, with local JSONL datasets inlined."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping (the job spec), not {type(data).__name__}")
    return inline_local_data(data, base=path.parent)


def inline_demo_files(spec: dict[str, Any], *, base: Path | None = None) -> dict[str, Any]:
    """Replace each condition's `demos_file` that exists here by its rows (`demos`)."""
    conditions = spec.get("conditions")
    if not isinstance(conditions, list):
        return spec
    out = []
    for cond in conditions:
        raw = cond.get("demos_file") if isinstance(cond, dict) else None
        path = None if not isinstance(raw, str) else Path(raw).expanduser()
        if path is not None and not path.is_absolute() and base is not None:
            path = base / path
        if path is None or not path.is_file():
            out.append(cond)  # none, or a path on the worker's data roots
            continue
        rows = parse_demos_file(path.read_text(encoding="utf-8"), source=str(path))
        out.append({**{k: v for k, v in cond.items() if k != "demos_file"}, "demos": rows})
    return {**spec, "conditions": out}


def inline_local_data(spec: dict[str, Any], *, base: Path | None = None) -> dict[str, Any]:
    """Replace a JSONL dataset whose file exists here by its items (the server cannot read it),
    and a condition's local `demos_file` by its rows."""
    spec = inline_demo_files(spec, base=base)
    dataset = spec.get("dataset")
    if not isinstance(dataset, dict) or dataset.get("source") != "jsonl":
        return spec
    raw = Path(str(dataset.get("path", ""))).expanduser()
    path = raw if raw.is_absolute() or base is None else base / raw
    if not path.is_file():
        return spec  # a path on the worker's data roots
    items, splits = parse_jsonl(path.read_text(encoding="utf-8"), source=str(path))
    inline = {k: v for k, v in dataset.items() if k not in ("source", "path")}
    inline.update(source="inline", items=[it.model_dump() for it in items])
    if splits is not None:
        inline["splits"] = splits
    return {**spec, "dataset": inline}


class Jobs:
    """Job operations (`client.jobs`)."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(self, spec: JobSpec | Mapping[str, Any] | str | Path) -> Job:
        """Submit a job: a `JobSpec`, a dict, or a YAML/JSON spec file path.

        A JSONL dataset whose file exists on this machine is sent inline (its path is relative
        to the spec file for files, to the working directory otherwise); other paths are left
        for the worker's data roots. Dicts are sent as they are, so the server's 422 names the
        invalid fields.

        Raises:
            UnprocessableEntityError: the server rejected the spec (the message names fields).
            ValueError: the spec file or a local JSONL file is malformed.
        """
        if isinstance(spec, JobSpec):
            body: Any = inline_local_data(spec.model_dump(mode="json"))
        elif isinstance(spec, (str, Path)):
            body = load_spec_file(spec)
        else:
            body = inline_local_data(dict(spec))
        response = self._t.request("POST", "/v1/jobs", json=body)
        return Job.model_validate(response.json())

    def get(self, job_id: str) -> Job:
        """The job's current state (status, progress, finished stages, error)."""
        return Job.model_validate(self._t.request("GET", f"/v1/jobs/{job_id}").json())

    def list(
        self, status: JobStatus | str | None = None, limit: int = 50, offset: int = 0
    ) -> JobList:
        """Your jobs, newest first, optionally only those with `status`."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = str(JobStatus(status))
        return JobList.model_validate(self._t.request("GET", "/v1/jobs", params=params).json())

    def cancel(self, job_id: str) -> Job:
        """Ask the job to stop (a running job stops between batches); 409 if it has ended."""
        response = self._t.request("POST", f"/v1/jobs/{job_id}/cancel", idempotent=True)
        return Job.model_validate(response.json())

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        progress: bool = True,
        max_unreachable: float = 600.0,
    ) -> Job:
        """Poll until the job finishes; return it if it succeeded.

        Survives server restarts and network blips: while the server cannot be reached (or
        answers 5xx) polling continues with a growing delay (up to 15 s between tries), for
        up to `max_unreachable` seconds in a row. The job runs on regardless.

        Raises:
            JobFailedError: the job failed (`err.job.error` says why).
            JobCancelledError: the job was cancelled.
            WaitTimeoutError: `timeout` seconds passed first (the job keeps running).
            APIConnectionError: the server was unreachable for `max_unreachable` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        view = _ProgressView(job_id) if progress else None
        unreachable_since: float | None = None
        misses = 0
        try:
            while True:
                try:
                    job = self.get(job_id)
                except (APIConnectionError, InternalServerError) as exc:
                    now = time.monotonic()
                    unreachable_since = unreachable_since or now
                    if now - unreachable_since >= max_unreachable:
                        raise APIConnectionError(
                            f"lost the reprlab server while waiting for job {job_id}: no "
                            f"answer for {now - unreachable_since:.0f} s (last error: {exc}). "
                            f"The job keeps running on the server; call wait({job_id!r}) again "
                            "once the server is back"
                        ) from exc
                    misses += 1
                    job = None
                else:
                    unreachable_since, misses = None, 0
                if job is not None:
                    if view is not None:
                        view.update(job)
                    if job.status.finished:
                        break
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeoutError(f"job {job_id} did not finish within {timeout} s")
                time.sleep(min(poll_interval * 2 ** min(misses, 10), max(poll_interval, 15.0)))
        finally:
            if view is not None:
                view.close()
        if job.status == JobStatus.FAILED:
            raise JobFailedError(job)
        if job.status == JobStatus.CANCELLED:
            raise JobCancelledError(job)
        return job

    def results(self, job_id: str) -> JobResults:
        """The typed per-layer results of a succeeded job (409 otherwise)."""
        response = self._t.request("GET", f"/v1/jobs/{job_id}/results")
        return JobResults.model_validate(response.json())

    def artifacts(self, job_id: str) -> builtins.list[ArtifactInfo]:
        """What can be downloaded: results.json, plots/<metric>.png, activations/<cond>..."""
        data = self._t.request("GET", f"/v1/jobs/{job_id}/artifacts").json()
        return [ArtifactInfo.model_validate(a) for a in data["artifacts"]]

    def download_artifact(self, job_id: str, name: str, dest: str | Path) -> Path:
        """Stream an artifact to `dest` (written atomically); returns the path."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        response = self._t.request("GET", f"/v1/jobs/{job_id}/artifacts/{name}", stream=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                for block in response.iter_bytes():
                    out.write(block)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual mode
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            response.close()
        return dest

    def download_adapter(self, job_id: str, result: str, dest_dir: str | Path) -> Path:
        """An SFT result's checkpoint as a directory `transformers`/`peft` load directly.

        LoRA: `adapter_model.safetensors` + `adapter_config.json`, so
        `PeftModel.from_pretrained(base_model, dest_dir)` works. Full fine-tuning:
        `model.safetensors` (every parameter; `model.load_state_dict(..., strict=False)`).
        `result` is a result name, e.g. 'lora' (final) or 'lora.step20'.
        """
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.download_artifact(
            job_id, f"adapters/{result}.safetensors", dest_dir / ".checkpoint.safetensors"
        )
        with open(tmp, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        meta = header.get("__metadata__", {})
        if meta.get("method") == "lora":
            config = json.loads(meta["peft_config"])
            (dest_dir / "adapter_config.json").write_text(json.dumps(config, indent=1))
            os.replace(tmp, dest_dir / "adapter_model.safetensors")
            return dest_dir
        os.replace(tmp, dest_dir / "model.safetensors")
        return dest_dir

    def prompts(self, job_id: str, condition: str) -> PromptsFile:
        """A condition's exact prompts (text, demo indices, tokens read) and their format."""
        name = f"prompts/{condition}.json"
        data = self._t.request("GET", f"/v1/jobs/{job_id}/artifacts/{name}").content
        return PromptsFile.model_validate_json(data)

    def activations(self, job_id: str, condition: str) -> dict[int, np.ndarray]:
        """A condition's last-token states: layer -> array [n_items, hidden]."""
        from safetensors.numpy import load

        name = f"activations/{condition}.safetensors"
        data = self._t.request("GET", f"/v1/jobs/{job_id}/artifacts/{name}").content
        tensors = load(data)
        return {
            int(k.split(".", 1)[1]): v for k, v in sorted(tensors.items(),
            key=lambda kv: int(kv[0].split(".", 1)[1]) if kv[0].startswith("layer.") else -1)
            if k.startswith("layer.")
        }  # fmt: skip


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _ProgressView:
    """A rich progress bar on a terminal; one line per stage change otherwise."""

    def __init__(self, job_id: str) -> None:
        self._job_id = job_id
        self._tty = sys.stderr.isatty()
        self._last_stage: str | None = None
        self._bar: Any = None
        self._task: Any = None
        if self._tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]{task.fields[stage]:<24}"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[message]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task("job", total=1.0, stage="queued", message="")
            self._bar.start()

    def update(self, job: Job) -> None:
        p = job.progress
        stage = p.stage if job.status != JobStatus.QUEUED else "queued"
        if self._bar is not None:
            self._bar.update(self._task, completed=p.fraction, stage=stage, message=p.message)
        elif stage != self._last_stage:
            print(f"[{self._job_id[:8]}] {job.status.value}: {stage} {p.fraction:.0%} {p.message}",
                  file=sys.stderr, flush=True)  # fmt: skip
        self._last_stage = stage

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
