"""Hidden-state extraction: forward hooks keep only the last token of the requested layers.

Layer numbering follows HF `output_hidden_states` (n_layers = number of blocks, so there are
n_layers + 1 indices):

- `residual`: index 0 is the embeddings, index i (0 < i < n_layers) the output of block i - 1
  (= the input of block i), index n_layers the output of the final norm (transformers ties the
  last hidden state to `last_hidden_state`, which is after the norm).
- `block_input_norm`: index i < n_layers is the output of `layers[i].input_layernorm` (the
  normalised input of block i, Doimo et al.), index n_layers the output of the final norm.

Only the model body runs (never the LM head), the forward pass stops at the last requested
layer, prompts are batched by length with left padding, and each kept state is copied to the
CPU as soon as its hook fires, so no full-sequence state outlives its layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from reprlab.schemas.specs import ExtractionSpec
from reprlab.worker.errors import ExtractionError, JobCancelled, SpecError

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle
    from transformers import PreTrainedTokenizerBase

FORMAT = "reprlab.activations/1"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_layers(layers: Literal["all"] | list[int], n_layers: int) -> list[int]:
    """Sorted layer indices in 0..n_layers for a model with `n_layers` blocks.

    Negative indices count from the end: -1 is n_layers (the final norm's output).

    Raises:
        SpecError: an index out of range, or two indices naming the same layer.
    """
    if layers == "all":
        return list(range(n_layers + 1))
    out = []
    for i in layers:
        j = i + n_layers + 1 if i < 0 else i
        if not 0 <= j <= n_layers:
            raise SpecError(
                f"layer index {i} is out of range for a model with {n_layers} blocks: valid "
                f"indices are 0..{n_layers} (or -{n_layers + 1}..-1)",
                hint=f"use indices in 0..{n_layers}, negatives from the end, or 'all'",
            )
        out.append(j)
    if len(set(out)) != len(out):
        raise SpecError(
            f"extraction.layers {layers} names the same layer twice",
            hint=f"-1 is the same layer as {n_layers}; list each layer once",
        )
    return sorted(out)


@dataclass
class Activations:
    """Last-token states: `states[p, j]` is prompt p at layer `layers[j]`.

    `states` is `Float[Tensor, "n_prompts n_layers hidden"]` on the CPU; `n_tokens[p]` is the
    length of prompt p in tokens.
    """

    layers: list[int]
    states: Tensor
    n_tokens: list[int]

    def to_safetensors(self, meta: Mapping[str, str]) -> bytes:
        """Serialise: one tensor 'layer.<i>' [n, hidden] per layer, plus 'n_tokens' int64 [n].

        bfloat16 states are written as float32 (numpy, which the SDK reads with, has no
        bfloat16). Metadata is `meta` plus 'format' and 'layers' (a JSON list).
        """
        states = self.states.float() if self.states.dtype == torch.bfloat16 else self.states
        tensors = {
            f"layer.{layer}": states[:, j].contiguous() for j, layer in enumerate(self.layers)
        }
        tensors["n_tokens"] = torch.tensor(self.n_tokens, dtype=torch.int64)
        metadata = {**dict(meta), "format": FORMAT, "layers": json.dumps(self.layers)}
        return bytes(st_save(tensors, metadata=metadata))

    @classmethod
    def from_safetensors(cls, data: bytes) -> Activations:
        """Read what `to_safetensors` wrote (bfloat16 states come back as float32)."""
        try:
            tensors = st_load(data)
        except SafetensorError as exc:
            raise ExtractionError(f"not a safetensors file: {exc}") from None
        layers = sorted(int(k.split(".", 1)[1]) for k in tensors if k.startswith("layer."))
        if "n_tokens" not in tensors or not layers:
            raise ExtractionError("not a reprlab activations file: missing layer.* or n_tokens")
        states = torch.stack([tensors[f"layer.{i}"] for i in layers], dim=1)
        return cls(layers=layers, states=states, n_tokens=tensors["n_tokens"].tolist())


class _StopForward(Exception):
    """Raised by the hook of the last requested layer to end the forward pass early."""


class _LastToken:
    """Hook target: keeps the last position of each requested layer of the running batch.

    With left padding the last position is every prompt's last token. The hook of the last
    requested layer raises `_StopForward` unless that layer is the final norm's output.
    """

    def __init__(self, layers: list[int], n_blocks: int, dtype: torch.dtype) -> None:
        self.stop_slot = len(layers) - 1 if layers[-1] < n_blocks else None
        self.n_layers = len(layers)
        self.dtype = dtype
        self.kept = torch.empty(0)

    def start(self, batch_size: int, hidden: int, device: torch.device) -> Tensor:
        """A fresh [batch, layers, hidden] buffer on `device` for the next forward pass."""
        self.kept = torch.empty(batch_size, self.n_layers, hidden, dtype=self.dtype, device=device)
        return self.kept

    def __call__(self, slot: int, states: Tensor) -> None:
        self.kept[:, slot] = states[:, -1, :]
        if slot == self.stop_slot:
            raise _StopForward


def decoder_body(model: nn.Module) -> Any:
    """The decoder stack (the module with `.layers` and `.norm`), without the LM head.

    Unwraps `.model` / `.get_decoder()` a few levels, so a causal LM, its base model or a
    wrapper around it (e.g. a peft model) all work.

    Raises:
        ExtractionError: no Llama-like decoder stack inside `model`.
    """
    body: Any = model
    for _ in range(4):  # e.g. PeftModel -> LoraModel -> LlamaForCausalLM -> LlamaModel
        if hasattr(body, "layers") and hasattr(body, "norm"):
            return body
        inner = getattr(body, "model", None)
        get_decoder = getattr(body, "get_decoder", None)
        if not isinstance(inner, nn.Module) and callable(get_decoder):
            inner = get_decoder()
        if not isinstance(inner, nn.Module) or inner is body:
            break
        body = inner
    raise ExtractionError(
        f"cannot find the decoder blocks of {type(model).__name__}: reprlab extracts from "
        "Llama-like decoders with .model.layers and .model.norm",
        hint="use a decoder-only model of the Llama family (Llama, Mistral, Qwen, SmolLM)",
    )


def extract_activations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    spec: ExtractionSpec,
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Activations:
    """The last-token state of every prompt at the requested layers, in prompt order.

    Args:
        model: A Llama-like causal LM (only its body runs) in eval mode.
        tokenizer: Its tokenizer; prompts are tokenized with its special tokens, no truncation.
        prompts: The prompt texts.
        spec: Layers, hidden-state kind, kept dtype, batch size and maximum length.
        progress: Called after each batch with (prompts done, total).
        should_stop: Asked before each batch; True cancels the extraction.

    Returns:
        Activations with `states` of shape [len(prompts), len(layers), hidden] on the CPU.

    Raises:
        ExtractionError: an unsupported architecture, an empty prompt or one longer than
            `spec.max_length`.
        SpecError: a layer index out of range.
        JobCancelled: `should_stop()` returned True before a batch.
    """
    body = decoder_body(model)
    n_blocks = len(body.layers)
    layers = resolve_layers(spec.layers, n_blocks)
    encoded = _tokenize(tokenizer, prompts, spec.max_length)
    lengths = [len(ids) for ids in encoded]
    total = len(encoded)
    hidden = _hidden_size(body)
    out = torch.empty(total, len(layers), hidden, dtype=_DTYPES[spec.dtype])
    device = next(model.parameters()).device
    collector = _LastToken(layers, n_blocks, _DTYPES[spec.dtype])
    handles = _install_hooks(body, layers, spec.hidden_state, collector)
    pad_id = _pad_id(tokenizer)
    order = sorted(range(total), key=lambda i: lengths[i])
    try:
        with torch.inference_mode():
            for start in range(0, total, spec.batch_size):
                if should_stop is not None and should_stop():
                    raise JobCancelled()
                batch = order[start : start + spec.batch_size]
                ids, mask = left_pad([encoded[i] for i in batch], pad_id, device)
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                kept = collector.start(len(batch), hidden, device)
                try:
                    body(
                        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
                    )
                except _StopForward:
                    pass
                # One device-to-host copy per batch (not per layer) keeps a GPU queue busy.
                out[torch.tensor(batch, dtype=torch.long)] = kept.cpu()
                if progress is not None:
                    progress(start + len(batch), total)
    finally:
        for handle in handles:
            handle.remove()
    return Activations(layers=layers, states=out, n_tokens=lengths)


def _tokenize(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_length: int
) -> list[list[int]]:
    if not prompts:
        return []
    encoded: list[list[int]] = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ExtractionError(
                f"prompt {i} is empty (0 tokens)", hint="remove empty items from the dataset"
            )
        if len(ids) > max_length:
            raise ExtractionError(
                f"prompt {i} has {len(ids)} tokens, more than extraction.max_length={max_length}",
                hint="raise extraction.max_length, or use fewer or shorter demonstrations (k)",
            )
    return encoded


def _hidden_size(body: Any) -> int:
    size = getattr(getattr(body, "config", None), "hidden_size", None)
    if isinstance(size, int):
        return size
    return int(body.norm.weight.shape[-1])


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Any id works (the attention mask hides it); prefer the tokenizer's own.
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(value, int):
            return value
    return 0


def left_pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Left-padded `input_ids` and `attention_mask` ([batch, longest]) for token id lists."""
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
    body: Any, layers: list[int], kind: str, keep: Callable[[int, Tensor], None]
) -> list[RemovableHandle]:
    """One hook per requested layer; `keep(slot, states)` receives [batch, seq, hidden]."""
    blocks = list(body.layers)
    handles: list[RemovableHandle] = []

    def on_output(slot: int) -> Callable[..., None]:
        return lambda _module, _args, output: keep(slot, _output_tensor(output))

    def on_input(slot: int) -> Callable[..., None]:
        return lambda _module, args, kwargs: keep(slot, _first_tensor(args, kwargs))

    try:
        for slot, layer in enumerate(layers):
            if layer == len(blocks):
                handles.append(body.norm.register_forward_hook(on_output(slot)))
            elif kind == "residual":
                # The input of block i is HF's hidden_states[i] (the embeddings for i = 0).
                hook = on_input(slot)
                handles.append(blocks[layer].register_forward_pre_hook(hook, with_kwargs=True))
            else:
                norm = getattr(blocks[layer], "input_layernorm", None)
                if norm is None:
                    raise ExtractionError(
                        f"block {layer} ({type(blocks[layer]).__name__}) has no input_layernorm",
                        hint="use extraction.hidden_state 'residual' for this model",
                    )
                handles.append(norm.register_forward_hook(on_output(slot)))
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    return handles
