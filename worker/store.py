"""Content keys for the artifacts a job produces.

A key is a hash of everything that determines an artifact's content, so the same work asked for
by another job (or by a retry of this one) lands on the same key and is reused, and a retry
overwrites instead of duplicating.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

KEY_VERSION = "1"


def digest(payload: Any) -> str:
    """A stable sha256 of a JSON-serialisable payload (dict keys sorted)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def prompts_digest(prompts: Sequence[str]) -> str:
    """A sha256 over an ordered list of prompt texts."""
    h = hashlib.sha256()
    for text in prompts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def activations_key(
    *, model_fingerprint: str, dtype: str, prompts_sha: str, extraction: dict[str, Any]
) -> str:
    """Key of one condition's activations: model, forward dtype, exact prompts, extraction."""
    payload = {
        "v": KEY_VERSION,
        "model": model_fingerprint,
        "dtype": dtype,
        "prompts": prompts_sha,
        "extraction": extraction,
    }
    return f"activations/{digest(payload)}.safetensors"


def job_key(job_id: str, name: str) -> str:
    """Key of a per-job artifact such as the results JSON or a plot."""
    return f"jobs/{job_id}/{name}"
