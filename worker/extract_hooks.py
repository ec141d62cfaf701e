"""Forward hooks of extraction: where each layer index is read, and what is kept from it.

`install_hooks` puts one hook per requested layer index (HF `output_hidden_states` numbering,
see `reprlab.worker.extract`) and `install_attention_hooks` one per block whose attention
weights are wanted. The hook targets pool as soon as a hook fires, so no full-sequence state
outlives its layer: `Pooled` keeps the last token (or a span's element-wise maximum) and stops
the forward pass after the last requested layer; `AttentionMass` keeps the attention mass from
the last token to each span.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from reprlab.worker.errors import ExtractionError

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle


class StopForward(Exception):
    """Raised by the hook of the last requested layer to end the forward pass early."""


class Pooled:
    """Hook target: keeps one pooled state per prompt of each requested layer of the batch.

    Without a pooling mask it keeps the last position (with left padding, every prompt's last
    token); with one (`[batch, seq]` bool) the element-wise maximum over the masked tokens.
    The hook of the last requested layer raises `StopForward` unless that layer is the final
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
            raise StopForward


class AttentionMass:
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


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    if args and isinstance(args[0], Tensor):
        return args[0]
    value = kwargs.get("hidden_states")
    if isinstance(value, Tensor):
        return value
    raise ExtractionError("a decoder block was called without its hidden states")


def _output_tensor(output: Any) -> Tensor:
    return output if isinstance(output, Tensor) else output[0]


def install_hooks(
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


def install_attention_hooks(
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
