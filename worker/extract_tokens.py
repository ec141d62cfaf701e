"""Tokens for extraction: prompt token ids, each named span's token range, left-padded batches.

A token belongs to a span when its character range (the fast tokenizer's offset mapping)
overlaps the span's; special tokens, which cover no character, never do. Batches are padded on
the left, so every prompt's last token sits in the last position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from reprlab.worker.errors import ExtractionError
from reprlab.worker.prompts import Prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def tokenize(
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


def token_ranges(
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


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id to pad with: the tokenizer's pad token, else its end-of-sequence token, else 0."""
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


def span_masks(
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
