"""Hidden-state extraction: forward hooks keep only the last token of the requested layers.

Layer numbering follows HF `output_hidden_states`: index i < L is the input of block i (index 0
the embeddings), index L (the number of blocks) the output of the final norm. With
`block_input_norm`, index i < L is the normalised input of block i (the output of its
`input_layernorm`, Doimo et al.) and index L again the final norm's output.

Only the model body runs (never the LM head), the forward stops after the last requested layer,
prompts are batched by length with left padding, and states leave the device as one row per
prompt and layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from reprlab.schemas.specs import ExtractionSpec
from reprlab.worker.errors import ExtractionError, JobCancelled, SpecError

FORMAT = "reprlab.activations/1"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_layers(layers: Literal["all"] | list[int], n_layers: int) -> list[int]:
    """Sorted layer indices in 0..n_layers; negatives count from the end (-1 == n_layers)."""
    if layers == "all":
        return list(range(n_layers + 1))
    out = []
    for i in layers:
        j = i + n_layers + 1 if i < 0 else i
        if not 0 <= j <= n_layers:
            raise SpecError(
                f"layer index {i} is out of range for a model with {n_layers} blocks",
                hint=f"use indices 0..{n_layers} (or -{n_layers + 1}..-1), or 'all'",
            )
        out.append(j)
    if len(set(out)) != len(out):
        raise SpecError(f"extraction.layers {layers} names the same layer twice")
    return sorted(out)


@dataclass
class Activations:
    """Last-token states: `states[p, j]` is prompt p at layer `layers[j]`."""

    layers: list[int]
    states: Tensor
    n_tokens: list[int]

    def to_safetensors(self, meta: Mapping[str, str]) -> bytes:
        """One tensor per layer ('layer.<i>', [n, hidden]) plus 'n_tokens'; bf16 -> float32."""
        states = self.states.float() if self.states.dtype == torch.bfloat16 else self.states
        tensors = {
            f"layer.{layer}": states[:, j].contiguous() for j, layer in enumerate(self.layers)
        }
        tensors["n_tokens"] = torch.tensor(self.n_tokens, dtype=torch.int64)
        metadata = {**dict(meta), "format": FORMAT, "layers": json.dumps(self.layers)}
        return bytes(st_save(tensors, metadata=metadata))

    @classmethod
    def from_safetensors(cls, data: bytes) -> Activations:
        tensors = st_load(data)
        layers = sorted(int(k.split(".", 1)[1]) for k in tensors if k.startswith("layer."))
        states = torch.stack([tensors[f"layer.{i}"] for i in layers], dim=1)
        return cls(layers=layers, states=states, n_tokens=tensors["n_tokens"].tolist())


class _Stop(Exception):
    """Raised by the last hook to end the forward pass early."""


def _body(model: nn.Module) -> Any:
    body: Any = getattr(model, "model", None)
    if body is None and hasattr(model, "get_decoder"):
        body = model.get_decoder()  # type: ignore[operator]
    if body is None or not hasattr(body, "layers") or not hasattr(body, "norm"):
        raise ExtractionError(
            f"cannot find the decoder blocks of {type(model).__name__}",
            hint="reprlab extracts from decoder-only models with .model.layers and "
            ".model.norm (Llama, Mistral, Qwen, SmolLM, ...)",
        )
    return body


def extract_activations(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    spec: ExtractionSpec,
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Activations:
    """The last-token state of every prompt at the requested layers.

    Raises:
        ExtractionError: an unsupported architecture or a prompt longer than max_length.
        SpecError: a layer index out of range.
        JobCancelled: `should_stop()` returned True between batches.
    """
    body = _body(model)
    blocks = list(body.layers)
    n_blocks = len(blocks)
    layers = resolve_layers(spec.layers, n_blocks)
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    for i, n in enumerate(lengths):
        if n > spec.max_length or n == 0:
            raise ExtractionError(
                f"prompt {i} has {n} tokens; extraction.max_length is {spec.max_length}",
                hint="raise extraction.max_length, or use fewer demonstrations (k)",
            )
    device = next(model.parameters()).device
    hidden = int(getattr(body.norm, "weight", torch.empty(0)).shape[-1]) or None
    out = torch.empty(0)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    slot = {layer: j for j, layer in enumerate(layers)}
    captured: dict[int, Tensor] = {}
    last = layers[-1]

    def keep(layer: int, states: Tensor) -> None:
        captured[layer] = states[:, -1, :]
        if layer == last and last < n_blocks:
            raise _Stop

    handles = _install_hooks(body, blocks, layers, spec.hidden_state, keep)
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    total = len(prompts)
    try:
        with torch.inference_mode():
            for start in range(0, total, spec.batch_size):
                if should_stop is not None and should_stop():
                    raise JobCancelled()
                idx = order[start : start + spec.batch_size]
                ids, mask = _left_pad([encoded[i] for i in idx], pad_id, device)
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                captured.clear()
                try:
                    body(
                        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
                    )
                except _Stop:
                    pass
                if out.numel() == 0:
                    width = hidden or captured[last].shape[-1]
                    out = torch.empty(total, len(layers), width, dtype=_DTYPES[spec.dtype])
                rows = torch.tensor(idx)
                for layer in layers:
                    out[rows, slot[layer]] = captured[layer].to("cpu", _DTYPES[spec.dtype])
                if progress is not None:
                    progress(min(start + len(idx), total), total)
    finally:
        for h in handles:
            h.remove()
    return Activations(layers=layers, states=out, n_tokens=lengths)


def _left_pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[r, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    if args and isinstance(args[0], Tensor):
        return args[0]
    value = kwargs.get("hidden_states")
    if isinstance(value, Tensor):
        return value
    raise ExtractionError("a decoder block was called without its hidden states")


def _output_tensor(output: Any) -> Tensor:
    return output if isinstance(output, Tensor) else output[0]


def _install_hooks(
    body: Any,
    blocks: list[nn.Module],
    layers: list[int],
    kind: str,
    keep: Callable[[int, Tensor], None],
) -> list[torch.utils.hooks.RemovableHandle]:
    handles = []
    n_blocks = len(blocks)
    for layer in layers:
        if layer == n_blocks:
            handles.append(body.norm.register_forward_hook(
                lambda _m, _a, out, layer=layer: keep(layer, _output_tensor(out))))  # fmt: skip
        elif kind == "residual":
            handles.append(blocks[layer].register_forward_pre_hook(
                lambda _m, args, kwargs, layer=layer: keep(layer, _first_tensor(args, kwargs)),
                with_kwargs=True))  # fmt: skip
        else:
            norm = getattr(blocks[layer], "input_layernorm", None)
            if norm is None:
                raise ExtractionError(
                    f"block {layer} of {type(blocks[layer]).__name__} has no input_layernorm",
                    hint="use extraction.hidden_state 'residual' for this model",
                )
            handles.append(norm.register_forward_hook(
                lambda _m, _a, out, layer=layer: keep(layer, _output_tensor(out))))  # fmt: skip
    return handles
