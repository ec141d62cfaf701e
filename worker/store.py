"""Content keys for the artifacts a job produces.

A key is a hash of everything that determines an artifact's content, so the same work asked for
by another job (or by a retry of this one) lands on the same key and is reused, and a retry
overwrites instead of duplicating.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reprlab.worker.prompts import Prompt

KEY_VERSION = "1"


def digest(payload: Any) -> str:
    """A stable sha256 of a JSON-serialisable payload (dict keys sorted)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def prompts_digest(prompts: Sequence[str | Prompt]) -> str:
    """A sha256 over an ordered list of prompts: their texts, and their spans where marked.

    A prompt without spans hashes as its bare text, so keys of unmarked data do not depend on
    whether the caller passed `Prompt`s or strings.
    """
    h = hashlib.sha256()
    for prompt in prompts:
        text = prompt if isinstance(prompt, str) else prompt.text
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
        if not isinstance(prompt, str) and prompt.spans:
            marks = json.dumps(sorted((k, list(v)) for k, v in prompt.spans.items()))
            h.update(b"\x00spans" + marks.encode("utf-8"))
    return h.hexdigest()


def activations_key(
    *,
    model_fingerprint: str,
    dtype: str,
    prompts_sha: str,
    extraction: dict[str, Any],
    prompt_format: dict[str, Any] | None = None,
) -> str:
    """Key of one condition's activations: model, forward dtype, exact prompts, the format
    they were rendered in, extraction."""
    payload: dict[str, Any] = {
        "v": KEY_VERSION,
        "model": model_fingerprint,
        "dtype": dtype,
        "prompts": prompts_sha,
        "extraction": extraction,
    }
    if prompt_format is not None:
        payload["format"] = prompt_format
    return f"activations/{digest(payload)}.safetensors"


def job_key(job_id: str, name: str) -> str:
    """Key of a per-job artifact such as the results JSON or a plot."""
    return f"jobs/{job_id}/{name}"
