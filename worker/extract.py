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
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from reprlab.schemas.specs import ExtractionSpec
from reprlab.worker.errors import ExtractionError, JobCancelled, SpecError
from reprlab.worker.prompts import Prompt

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
    """Pooled states: `states[p, j]` is prompt p at layer `layers[j]`.

    `states` is `Float[Tensor, "n_prompts n_layers hidden"]` on the CPU (the last token, or the
    maximum over a span's tokens); `n_tokens[p]` is the length of prompt p in tokens.
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

    def to_safetensors(self, meta: Mapping[str, str]) -> bytes:
        """Serialise: one tensor 'layer.<i>' [n, hidden] per layer, plus 'n_tokens' int64 [n],
        plus 'attention' float32 (layout as the attribute) when there is one.

        bfloat16 states are written as float32 (numpy, which the SDK reads with, has no
        bfloat16). Metadata is `meta` plus 'format' and 'layers' (a JSON list), and with
        attention 'attention_spans' (a JSON list naming its last axis).
        """
        states = self.states.float() if self.states.dtype == torch.bfloat16 else self.states
        tensors = {
            f"layer.{layer}": states[:, j].contiguous() for j, layer in enumerate(self.layers)
        }
        tensors["n_tokens"] = torch.tensor(self.n_tokens, dtype=torch.int64)
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
        return cls(
            layers=layers, states=states, n_tokens=tensors["n_tokens"].tolist(),
            attention=attention, attention_spans=spans,
        )  # fmt: skip


def _metadata(data: bytes) -> dict[str, str]:
    """The '__metadata__' of a safetensors file (its header is JSON after an 8-byte length)."""
    size = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + size]).get("__metadata__")
    return meta if isinstance(meta, dict) else {}


class _StopForward(Exception):
    """Raised by the hook of the last requested layer to end the forward pass early."""


class _Pooled:
    """Hook target: keeps one pooled state per prompt of each requested layer of the batch.

    Without a pooling mask it keeps the last position (with left padding, every prompt's last
    token); with one (`[batch, seq]` bool) the element-wise maximum over the masked tokens.
    The hook of the last requested layer raises `_StopForward` unless that layer is the final
    norm's output.
    """

    def __init__(self, layers: list[int], n_blocks: int, dtype: torch.dtype) -> None:
        self.stop_slot = len(layers) - 1 if layers[-1] < n_blocks else None
        self.n_layers = len(layers)
        self.dtype = dtype
        self.kept = torch.empty(0)
        self.pool: Tensor | None = None

    def start(
        self, batch_size: int, hidden: int, device: torch.device, pool: Tensor | None
    ) -> Tensor:
        """A fresh [batch, layers, hidden] buffer on `device` for the next forward pass."""
        self.kept = torch.empty(batch_size, self.n_layers, hidden, dtype=self.dtype, device=device)
        self.pool = pool
        return self.kept

    def __call__(self, slot: int, states: Tensor) -> None:
        if self.pool is None:
            self.kept[:, slot] = states[:, -1, :]
        else:
            outside = ~self.pool[:, :, None]
            self.kept[:, slot] = states.masked_fill(outside, float("-inf")).amax(dim=1)
        if slot == self.stop_slot:
            raise _StopForward


class _AttentionMass:
    """Hook target: the attention mass from the last token to each span, per head.

    `start` takes the span masks `[n_spans, batch, seq]` of the batch; each call receives one
    block's attention weights `[batch, heads, seq, seq]` and fills that layer's slot of a
    `[batch, layers, heads, n_spans]` float32 buffer (NaN where no block reported).
    """

    def __init__(self, n_layers: int, n_heads: int) -> None:
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.kept = torch.empty(0)
        self.spans = torch.empty(0)

    def start(self, batch_size: int, device: torch.device, spans: Tensor) -> Tensor:
        shape = (batch_size, self.n_layers, self.n_heads, spans.shape[0])
        self.kept = torch.full(shape, float("nan"), dtype=torch.float32, device=device)
        self.spans = spans.to(torch.float32)
        return self.kept

    def __call__(self, slot: int, block: int, weights: Tensor | None) -> None:
        if weights is None or weights.dim() != 4 or weights.shape[1] != self.n_heads:
            got = "none" if weights is None else f"shape {tuple(weights.shape)}"
            raise ExtractionError(
                f"block {block} returned no usable attention weights ({got}; expected "
                f"[batch, {self.n_heads}, seq, seq])",
                hint="extraction.attention needs a Llama-like model with eager attention",
            )
        last = weights[:, :, -1, :].float()  # the last token's row: [batch, heads, seq]
        self.kept[:, slot] = torch.einsum("bhs,nbs->bhn", last, self.spans)


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
    encoded, offsets = _tokenize(tokenizer, texts, spec.max_length, plan.names)
    ranges = _token_ranges(prompts, texts, offsets, plan.names) if plan.names else []
    total, n_layers = len(encoded), len(plan.layers)
    states = torch.empty(total, n_layers, _hidden_size(body), dtype=_DTYPES[spec.dtype])
    attention = _AttentionMass(n_layers, _n_heads(body)) if spec.attention is not None else None
    masses = None
    if attention is not None:
        shape = (total, n_layers, attention.n_heads, len(plan.attention))
        masses = torch.full(shape, float("nan"))
    pooled = _Pooled(plan.layers, len(body.layers), _DTYPES[spec.dtype])
    device = next(model.parameters()).device
    forward = _Forward(body, device, states.shape[-1], _pad_id(tokenizer), plan, pooled, attention)
    handles = _install_hooks(body, plan.layers, spec.hidden_state, pooled)
    order = sorted(range(total), key=lambda i: len(encoded[i]))
    try:
        if attention is not None:
            handles += _install_attention_hooks(body, plan.layers, attention)
        eager = _eager_attention(body) if attention is not None else nullcontext()
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
    return _activations(plan, states, [len(e) for e in encoded], masses, spec)


def _activations(
    plan: _Plan, states: Tensor, n_tokens: list[int], masses: Tensor | None, spec: ExtractionSpec
) -> Activations:
    if masses is None or spec.attention is None:
        return Activations(layers=plan.layers, states=states, n_tokens=n_tokens)
    return Activations(
        layers=plan.layers, states=states, n_tokens=n_tokens,
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
    pooled: _Pooled
    attention: _AttentionMass | None

    def run(
        self, seqs: list[list[int]], ranges: list[dict[str, tuple[int, int]]]
    ) -> tuple[Tensor, Tensor | None]:
        """Pooled states [batch, layers, hidden] and attention masses [batch, layers, heads,
        spans] (None without attention), both on the CPU."""
        ids, mask = left_pad(seqs, self.pad_id, self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        names = self.plan.names
        spans = _span_masks(seqs, ranges, names, ids.shape[1], self.device)
        pool = spans[0] if self.plan.pool else None
        kept = self.pooled.start(len(seqs), self.hidden, self.device, pool)
        if self.attention is not None:
            self.attention.start(len(seqs), self.device, spans[self.plan.attention])
        try:
            self.body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
        except _StopForward:
            pass
        # One device-to-host copy per batch (not per layer) keeps a GPU queue busy.
        masses = self.attention.kept.cpu() if self.attention is not None else None
        return kept.cpu(), masses


def _span_masks(
    seqs: list[list[int]],
    ranges: list[dict[str, tuple[int, int]]],
    names: list[str],
    width: int,
    device: torch.device,
) -> Tensor:
    """`[n_names, batch, width]` bool: the tokens of each named span, in left-padded positions."""
    masks = torch.zeros(len(names), len(seqs), width, dtype=torch.bool)
    for row, seq in enumerate(seqs):
        pad = width - len(seq)
        for k, name in enumerate(names):
            first, end = ranges[row][name]
            masks[k, row, pad + first : pad + end] = True
    return masks.to(device)


@contextmanager
def _eager_attention(body: Any) -> Iterator[None]:
    """Run `body` with eager attention (the only kind that returns weights), then restore the
    implementation it had (the config is shared with the model that wraps it)."""
    config = getattr(body, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if previous == "eager":
        yield
        return
    setter = getattr(body, "set_attn_implementation", None)
    if not callable(setter) or previous is None:
        raise ExtractionError(
            f"{type(body).__name__} cannot switch to eager attention, which extraction.attention "
            "needs (other implementations return no attention weights)",
            hint="use a transformers model of the Llama family, or leave extraction.attention out",
        )
    setter("eager")
    try:
        if getattr(config, "_attn_implementation", None) != "eager":
            raise ExtractionError(
                f"{type(body).__name__} refused eager attention (it stays {previous!r})",
                hint="leave extraction.attention out for this model",
            )
        yield
    finally:
        setter(previous)


def _n_heads(body: Any) -> int:
    heads = getattr(getattr(body, "config", None), "num_attention_heads", None)
    if not isinstance(heads, int):
        raise ExtractionError(
            f"{type(body).__name__} has no config.num_attention_heads",
            hint="extraction.attention needs a Llama-like transformers model",
        )
    return heads


def _tokenize(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_length: int, spans: list[str]
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Token ids of each prompt, and with `spans` (names needed) each token's character range."""
    if not prompts:
        return [], []
    if spans and not getattr(tokenizer, "is_fast", False):
        raise ExtractionError(
            f"extraction needs the tokens of spans {spans}, which come from a fast tokenizer's "
            f"offset mapping; {type(tokenizer).__name__} is a slow tokenizer",
            hint="load the model's fast tokenizer (tokenizer.json), or use position 'last' "
            "without attention",
        )
    enc = tokenizer(list(prompts), add_special_tokens=True, return_offsets_mapping=bool(spans))
    encoded: list[list[int]] = enc["input_ids"]
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
    offsets = [[(int(a), int(b)) for a, b in o] for o in enc["offset_mapping"]] if spans else []
    return encoded, offsets


def _token_ranges(
    prompts: Sequence[str | Prompt],
    texts: list[str],
    offsets: list[list[tuple[int, int]]],
    names: list[str],
) -> list[dict[str, tuple[int, int]]]:
    """Per prompt, the token range [first, end) of each named span.

    Raises:
        ExtractionError: a prompt without one of the spans, or a span that covers no token.
    """
    out = []
    for p, (prompt, text, offs) in enumerate(zip(prompts, texts, offsets, strict=True)):
        spans = {} if isinstance(prompt, str) else prompt.spans
        where = f"prompt {p}" if isinstance(prompt, str) else f"prompt {p} (item {prompt.item})"
        bounds = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
        ranges = {}
        for name in names:
            if name not in spans:
                have = ", ".join(repr(n) for n in sorted(spans)) or "none"
                raise ExtractionError(
                    f"{where} has no span {name!r} (its spans: {have})",
                    hint="use a dataset whose items mark this span, or change extraction.span "
                    "/ extraction.attention.spans",
                )
            ranges[name] = _token_range(bounds, spans[name], name, where, len(text))
        out.append(ranges)
    return out


def _token_range(
    bounds: np.ndarray, span: tuple[int, int], name: str, where: str, n_chars: int
) -> tuple[int, int]:
    """The tokens whose characters overlap `span` (special tokens, which cover none, never)."""
    start, end = span
    if not 0 <= start < end <= n_chars:
        raise ExtractionError(
            f"span {name!r} of {where} is [{start}, {end}), outside its {n_chars} characters"
        )
    a, b = bounds[:, 0], bounds[:, 1]
    hit = np.flatnonzero((b > a) & (a < end) & (b > start))
    if hit.size == 0:
        raise ExtractionError(
            f"span {name!r} [{start}, {end}) of {where} covers no token",
            hint="make the span cover at least one character the tokenizer keeps",
        )
    return int(hit[0]), int(hit[-1]) + 1


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


def _install_attention_hooks(
    body: Any, layers: list[int], keep: Callable[[int, int, Tensor | None], None]
) -> list[RemovableHandle]:
    """For each requested layer i >= 1, a hook on block i - 1's self-attention; `keep(slot,
    block, weights)` receives its weights [batch, heads, seq, seq] (None if it returned none)."""
    blocks = list(body.layers)
    handles: list[RemovableHandle] = []

    def on_output(slot: int, block: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            keep(slot, block, weights if isinstance(weights, Tensor) else None)

        return hook

    try:
        for slot, layer in enumerate(layers):
            if layer == 0:  # the embeddings: no attention, the slot stays NaN
                continue
            attn = getattr(blocks[layer - 1], "self_attn", None)
            if not isinstance(attn, nn.Module):
                raise ExtractionError(
                    f"block {layer - 1} ({type(blocks[layer - 1]).__name__}) has no self_attn",
                    hint="extraction.attention needs a Llama-like model; leave it out otherwise",
                )
            handles.append(attn.register_forward_hook(on_output(slot, layer - 1)))
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    return handles
