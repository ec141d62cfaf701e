"""The model side of extraction: the Llama-like decoder body, its sizes, eager attention.

Extraction runs only the body (the module with `.layers` and `.norm`, never the LM head). It
reads the hidden size and head count from the body's config, and switches the body to eager
attention (the only implementation that returns weights) for the passes that measure attention.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from reprlab.worker.errors import ExtractionError


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


def hidden_size(body: Any) -> int:
    """The width of the body's hidden states (config.hidden_size, else the final norm's)."""
    size = getattr(getattr(body, "config", None), "hidden_size", None)
    if isinstance(size, int):
        return size
    return int(body.norm.weight.shape[-1])


def n_heads(body: Any) -> int:
    """The number of attention heads per block (config.num_attention_heads).

    Raises:
        ExtractionError: the body's config does not say.
    """
    heads = getattr(getattr(body, "config", None), "num_attention_heads", None)
    if not isinstance(heads, int):
        raise ExtractionError(
            f"{type(body).__name__} has no config.num_attention_heads",
            hint="extraction.attention needs a Llama-like transformers model",
        )
    return heads


@contextmanager
def eager_attention(body: Any) -> Iterator[None]:
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
