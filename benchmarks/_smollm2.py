"""The built-in SmolLM2-135M-Instruct for benchmarks: converted once into $REPRLAB_MODEL_CACHE
(default ~/.cache/reprlab/models) by `pull_builtin`, loaded in float32 with a left-padding
tokenizer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reprlab.worker.models import pull_builtin, select_device


def load_smollm2(
    device: str = "cpu", log: Callable[[str], None] | None = None
) -> tuple[Any, Any, torch.device]:
    """(model in eval mode on `device`, tokenizer, the device); `device` as in the job spec."""
    cache = Path(os.environ.get("REPRLAB_MODEL_CACHE", Path.home() / ".cache/reprlab/models"))
    path = pull_builtin("smollm2-135m-instruct", cache, log=log)
    where = select_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(where).eval()
    return model, tokenizer, where
