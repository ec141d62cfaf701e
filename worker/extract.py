"""Hidden-state extraction: forward hooks keep one pooled state per prompt and requested layer.

Layer numbering follows HF `output_hidden_states` (n_layers = number of blocks, so there are
n_layers + 1 indices):

- `residual`: index 0 is the embeddings, index i (0 < i < n_layers) the output of block i - 1
  (= the input of block i), index n_layers the output of the final norm (transformers ties the
  last hidden state to `last_hidden_state`, which is after the norm).
- `block_input_norm`: index i < n_layers is the output of `layers[i].input_layernorm` (the
  normalised input of block i, Doimo et al.), index n_layers the output of the final norm.

Positions: `last` keeps the last prompt token; `span_max` the element-wise maximum over the
tokens of one named span of the query item (Yousefi et al.'s max-pooling). A token belongs to a
span when its character range (the fast tokenizer's offset mapping) overlaps the span's.

Attention (`spec.attention`): the same forward pass runs with eager attention (SDPA returns no
weights; the model's implementation is restored afterwards) and keeps, for each requested layer
index i >= 1, the weights of block i - 1 (HF `attentions[i - 1]`, the block whose output is
residual index i) from the last prompt token, summed over each named span's tokens. Index 0
(the embeddings) has no attention: its entries are NaN, so the array stays aligned with `layers`.

Only the model body runs (never the LM head), the forward pass stops at the last requested
layer, prompts are batched by length with left padding, and each kept state is pooled as soon
as its hook fires, so no full-sequence state outlives its layer.

This module holds the public entry (`extract_activations`, `Activations` and its file format,
`resolve_layers`); the pieces live in `extract_tokens` (token ids, span ranges, left padding),
`extract_hooks` (forward hooks and pooling) and `extract_body` (the decoder body, its sizes,
eager attention).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from reprlab.schemas.specs import ExtractionSpec
from reprlab.worker.errors import ExtractionError, JobCancelled, SpecError
from reprlab.worker.extract_body import decoder_body, eager_attention, hidden_size, n_heads
from reprlab.worker.extract_hooks import (
    AttentionMass,
    Pooled,
    StopForward,
    install_attention_hooks,
    install_hooks,
)
from reprlab.worker.extract_tokens import left_pad, pad_id, span_masks, token_ranges, tokenize
from reprlab.worker.prompts import Prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "FORMAT",
    "Activations",
    "decoder_body",
    "extract_activations",
    "left_pad",
    "resolve_layers",
]


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
    """Pooled states: `states[p, j]` is prompt p at layer `layers[j]`.

    `states` is `Float[Tensor, "n_prompts n_layers hidden"]` on the CPU (the last token, or the
    maximum over a span's tokens); `n_tokens[p]` is the length of prompt p in tokens and
    `read[p]` the token range [first, end) its state was read from (pooled over), in the
    prompt's own tokens: `(n_tokens[p] - 1, n_tokens[p])` for position 'last'.
    `attention` (None unless asked for) is float32 on the CPU, `[n_prompts, n_layers, n_spans]`
    (mean over heads) or `[n_prompts, n_layers, n_heads, n_spans]` (per head): the attention
    mass from the last token of prompt p to span `attention_spans[s]` at layer `layers[j]`,
    NaN at layer 0.
    """

    layers: list[int]
    states: Tensor
    n_tokens: list[int]
    attention: Tensor | None = None
    attention_spans: list[str] = field(default_factory=list)
    read: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.read:
            self.read = [(n - 1, n) for n in self.n_tokens]

    def to_safetensors(self, meta: Mapping[str, str]) -> bytes:
        """Serialise: one tensor 'layer.<i>' [n, hidden] per layer, plus 'n_tokens' int64 [n]
        and 'read' int64 [n, 2] (the token range read), plus 'attention' float32 (layout as
        the attribute) when there is one.

        bfloat16 states are written as float32 (numpy, which the SDK reads with, has no
        bfloat16). Metadata is `meta` plus 'format' and 'layers' (a JSON list), and with
        attention 'attention_spans' (a JSON list naming its last axis).
        """
        states = self.states.float() if self.states.dtype == torch.bfloat16 else self.states
        tensors = {
            f"layer.{layer}": states[:, j].contiguous() for j, layer in enumerate(self.layers)
        }
        tensors["n_tokens"] = torch.tensor(self.n_tokens, dtype=torch.int64)
        tensors["read"] = torch.tensor(self.read, dtype=torch.int64).reshape(-1, 2)
        metadata = {**dict(meta), "format": FORMAT, "layers": json.dumps(self.layers)}
        if self.attention is not None:
            tensors["attention"] = self.attention.float().contiguous()
            metadata["attention_spans"] = json.dumps(self.attention_spans)
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
        attention = tensors.get("attention")
        spans: list[str] = []
        if attention is not None:
            spans = json.loads(_metadata(data).get("attention_spans", "[]"))
            expected = (states.shape[0], len(layers))
            if tuple(attention.shape[:2]) != expected or attention.shape[-1] != len(spans):
                raise ExtractionError(
                    f"corrupt activations file: attention of shape {tuple(attention.shape)} "
                    f"does not match {expected[0]} prompts, {expected[1]} layers, spans {spans}"
                )
        read = tensors.get("read")
        return cls(
            layers=layers, states=states, n_tokens=tensors["n_tokens"].tolist(),
            attention=attention, attention_spans=spans,
            read=[] if read is None else [(int(a), int(b)) for a, b in read.tolist()],
        )  # fmt: skip


def _metadata(data: bytes) -> dict[str, str]:
    """The '__metadata__' of a safetensors file (its header is JSON after an 8-byte length)."""
    size = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + size]).get("__metadata__")
    return meta if isinstance(meta, dict) else {}


@dataclass
class _Plan:
    """What one extraction keeps: the layers, the pooled span, the attention spans."""

    layers: list[int]
    names: list[str]  # every span whose tokens are needed, the pooled one first
    pool: bool  # position 'span_max': names[0] is pooled
    attention: list[int]  # indices into `names` of the attention spans, in spec order


def _plan(spec: ExtractionSpec, n_blocks: int) -> _Plan:
    layers = resolve_layers(spec.layers, n_blocks)
    names = [spec.span] if spec.position == "span_max" else []
    wanted = list(spec.attention.spans) if spec.attention is not None else []
    names += [name for name in wanted if name not in names]
    return _Plan(layers, names, spec.position == "span_max", [names.index(n) for n in wanted])


def extract_activations(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str | Prompt],
    spec: ExtractionSpec,
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Activations:
    """The pooled state of every prompt at the requested layers, in prompt order.

    Args:
        model: A Llama-like causal LM (only its body runs) in eval mode.
        tokenizer: Its tokenizer; prompts are tokenized with its special tokens, no truncation.
            Spans (position 'span_max', attention) need a fast tokenizer (offset mapping).
        prompts: The prompt texts, or `Prompt`s, whose `spans` position 'span_max' and
            attention read (a bare string has no spans).
        spec: Layers, position, hidden-state kind, attention, kept dtype, batch size and
            maximum length.
        progress: Called after each batch with (prompts done, total).
        should_stop: Asked before each batch; True cancels the extraction.

    Returns:
        Activations with `states` of shape [len(prompts), len(layers), hidden] on the CPU, and
        with `spec.attention` the attention masses (see `Activations`).

    Raises:
        ExtractionError: an unsupported architecture, an empty prompt or one longer than
            `spec.max_length`, a prompt without a span the spec names or whose span covers no
            token, a slow tokenizer where spans are needed, or a model that cannot run eager
            attention.
        SpecError: a layer index out of range.
        JobCancelled: `should_stop()` returned True before a batch.
    """
    body = decoder_body(model)
    plan = _plan(spec, len(body.layers))
    texts = [p if isinstance(p, str) else p.text for p in prompts]
    encoded, offsets = tokenize(tokenizer, texts, spec.max_length, plan.names)
    ranges = token_ranges(prompts, texts, offsets, plan.names) if plan.names else []
    total, n_layers = len(encoded), len(plan.layers)
    states = torch.empty(total, n_layers, hidden_size(body), dtype=_DTYPES[spec.dtype])
    attention = AttentionMass(n_layers, n_heads(body)) if spec.attention is not None else None
    masses = None
    if attention is not None:
        shape = (total, n_layers, attention.n_heads, len(plan.attention))
        masses = torch.full(shape, float("nan"))
    pooled = Pooled(plan.layers, len(body.layers), _DTYPES[spec.dtype])
    device = next(model.parameters()).device
    forward = _Forward(body, device, states.shape[-1], pad_id(tokenizer), plan, pooled, attention)
    handles = install_hooks(body, plan.layers, spec.hidden_state, pooled)
    order = sorted(range(total), key=lambda i: len(encoded[i]))
    try:
        if attention is not None:
            handles += install_attention_hooks(body, plan.layers, attention)
        eager = eager_attention(body) if attention is not None else nullcontext()
        with torch.inference_mode(), eager:
            for start in range(0, total, spec.batch_size):
                if should_stop is not None and should_stop():
                    raise JobCancelled()
                batch = order[start : start + spec.batch_size]
                kept, mass = forward.run(
                    [encoded[i] for i in batch], [ranges[i] for i in batch] if ranges else []
                )
                index = torch.tensor(batch, dtype=torch.long)
                states[index] = kept
                if masses is not None and mass is not None:
                    masses[index] = mass
                if progress is not None:
                    progress(start + len(batch), total)
    finally:
        for handle in handles:
            handle.remove()
    n_tokens = [len(e) for e in encoded]
    read = [r[plan.names[0]] for r in ranges] if plan.pool else []  # [] -> the last tokens
    return _activations(plan, states, n_tokens, read, masses, spec)


def _activations(
    plan: _Plan,
    states: Tensor,
    n_tokens: list[int],
    read: list[tuple[int, int]],
    masses: Tensor | None,
    spec: ExtractionSpec,
) -> Activations:
    if masses is None or spec.attention is None:
        return Activations(layers=plan.layers, states=states, n_tokens=n_tokens, read=read)
    return Activations(
        layers=plan.layers, states=states, n_tokens=n_tokens, read=read,
        attention=masses if spec.attention.per_head else masses.mean(dim=2),
        attention_spans=list(spec.attention.spans),
    )  # fmt: skip


@dataclass
class _Forward:
    """One forward pass of the body over a batch, with the hook targets reset for it."""

    body: Any
    device: torch.device
    hidden: int
    pad_id: int
    plan: _Plan
    pooled: Pooled
    attention: AttentionMass | None

    def run(
        self, seqs: list[list[int]], ranges: list[dict[str, tuple[int, int]]]
    ) -> tuple[Tensor, Tensor | None]:
        """Pooled states [batch, layers, hidden] and attention masses [batch, layers, heads,
        spans] (None without attention), both on the CPU."""
        ids, mask = left_pad(seqs, self.pad_id, self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        names = self.plan.names
        spans = span_masks(seqs, ranges, names, ids.shape[1], self.device)
        pool = spans[0] if self.plan.pool else None
        kept = self.pooled.start(len(seqs), self.hidden, self.device, pool)
        if self.attention is not None:
            self.attention.start(len(seqs), self.device, spans[self.plan.attention])
        try:
            self.body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
        except StopForward:
            pass
        # One device-to-host copy per batch (not per layer) keeps a GPU queue busy.
        masses = self.attention.kept.cpu() if self.attention is not None else None
        return kept.cpu(), masses
