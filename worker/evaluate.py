"""Behavioural accuracy: how often the model picks the right label, scored by likelihood.

For every prompt and every label option, the continuation (the rest of the target delimiter
after the prompt's end, then the option; `prompts.PromptFormat.continuation`) is scored by
teacher forcing: the sum of the log-probabilities of its tokens given the prompt, on the joint
tokenisation of prompt + continuation. Reported, as in lm-evaluation-harness:
- `accuracy`: the gold option has the highest log-likelihood;
- `accuracy_norm`: the same after dividing each option's log-likelihood by its length in bytes;
- `first_token_accuracy`: given the prompt and the rest of the delimiter, the greedy (argmax)
  next token is the first token of the gold answer (the delimiter's own tokens are not
  counted: every option shares them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reprlab.worker.errors import JobCancelled, SpecError
from reprlab.worker.extract import left_pad

# Part of the cache key of stored scores: bump it when the scoring rule changes.
SCORING_VERSION = "3"


@dataclass(frozen=True)
class BehaviourScores:
    """Accuracy of one condition and the per-item choices behind it.

    `boundary_merges` counts the prompts whose last tokens merge with a continuation's first
    (the prompt's own tokens are not a prefix of prompt + continuation's): those are scored on
    the joint tokenisation past the common prefix.
    """

    accuracy: float
    accuracy_norm: float
    first_token_accuracy: float
    n_items: int
    options: list[str]
    choices: list[int]  # per item: the option with the highest log-likelihood
    loglik: list[list[float]]  # per item, per option
    boundary_merges: int = 0


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def split_continuation(
    tokenizer: Any, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation whose concatenation is the joint encoding.

    The whole text is encoded once and cut where it stops agreeing with the context's own
    encoding (at the context's end when nothing merges), keeping at least one continuation
    token: the tokens scored or trained on are always those of `context + continuation`.
    """
    whole: list[int] = tokenizer(context + continuation)["input_ids"]
    cut = _cut(whole, tokenizer(context)["input_ids"])
    return whole[:cut], whole[cut:]


def _cut(whole: Sequence[int], context: Sequence[int]) -> int:
    """Where the joint encoding stops agreeing with the context's own, leaving at least one
    continuation token."""
    return min(_common_prefix(whole, context), len(whole) - 1)


@dataclass(frozen=True)
class _Encoded:
    """One prompt's shared context tokens, each option's continuation and answer offset."""

    context: list[int]
    continuations: list[list[int]]
    answer_at: list[int]  # per option: the continuation index of the answer's first token
    merged: bool


def _encode(tokenizer: Any, prompt: str, prefix: str, options: Sequence[str]) -> _Encoded:
    """Tokens of a prompt and its options on the joint tokenisation (see `BehaviourScores`).

    The context is cut where any option's encoding of prompt + continuation stops agreeing
    with the prompt's own, so every option is scored on its own joint tokens past one shared
    context. The answer starts after the tokens that encode only prompt + `prefix`.
    """
    ctx: list[int] = tokenizer(prompt)["input_ids"]
    wholes: list[list[int]] = [tokenizer(prompt + prefix + o)["input_ids"] for o in options]
    cut = min(_cut(w, ctx) for w in wholes)
    if cut < 1:
        raise SpecError(
            "a prompt's only token merges with its continuation, so no context is left to "
            f"score from (prompt {prompt[:60]!r})",
            hint="use longer prompts, or a delimiter that separates the answer",
        )
    with_prefix: list[int] = tokenizer(prompt + prefix)["input_ids"] if prefix else ctx
    answer_at = []
    for w in wholes:
        a = _common_prefix(with_prefix, w) - cut
        answer_at.append(min(max(a, 0), len(w) - cut - 1))
    return _Encoded(ctx[:cut], [w[cut:] for w in wholes], answer_at, cut < len(ctx))


def score_options(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    gold: Sequence[int],
    options: Sequence[str],
    prefix: str,
    *,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BehaviourScores:
    """Log-likelihood scoring of every option for every prompt (see the module docstring).

    Args:
        prefix: The text between a prompt's end and the answer (the target delimiter minus
            the query suffix; "" when the prompt ends at the delimiter).

    Raises:
        SpecError: no options, or a gold index outside the options.
        JobCancelled: `should_stop()` returned True between batches.
    """
    if not options:
        raise SpecError("accuracy needs a closed set of label options; this dataset has none")
    if len(gold) != len(prompts) or any(not 0 <= g < len(options) for g in gold):
        raise SpecError("every item's output must be one of the dataset's options")
    encoded = [_encode(tokenizer, p, prefix, options) for p in prompts]
    n_opt = len(options)
    device = next(model.parameters()).device
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    scores = torch.empty(len(prompts) * n_opt, dtype=torch.float64)
    first_hit = torch.zeros(len(prompts) * n_opt, dtype=torch.bool)
    # The context is the same for every option, so each prompt is run once and its KV cache
    # is shared by the options' continuations.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i].context))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            if should_stop is not None and should_stop():
                raise JobCancelled()
            idx = order[start : start + batch_size]
            conts = [c for i in idx for c in encoded[i].continuations]
            logp = _continuation_logprobs(
                model, [encoded[i].context for i in idx], conts, n_opt, pad_id, device
            )
            b = 0
            for i in idx:
                for j, cont in enumerate(encoded[i].continuations):
                    pred = logp[b, : len(cont)]
                    target = torch.tensor(cont, device=pred.device)
                    scores[i * n_opt + j] = pred.gather(-1, target[:, None]).sum().double().cpu()
                    a = encoded[i].answer_at[j]  # the first token of the answer itself
                    first_hit[i * n_opt + j] = bool(pred[a].argmax() == target[a])
                    b += 1
            if progress is not None:
                progress(min(start + len(idx), len(order)) * n_opt, len(order) * n_opt)
    merges = sum(e.merged for e in encoded)
    return _summarise(scores, first_hit, gold, list(options), merges)


def _continuation_logprobs(
    model: nn.Module,
    contexts: list[list[int]],
    continuations: list[list[int]],
    n_opt: int,
    pad_id: int,
    device: torch.device,
) -> Tensor:
    """Log-probabilities [len(continuations), width, vocab]: row b, position t predicts
    token t of continuation b, whose context is `contexts[b // n_opt]`.

    The contexts run once (left padded, explicit positions) keeping their KV cache; the cache
    is repeated per option and the continuations (right padded) run on top of it.
    """
    ids, mask = left_pad(contexts, pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=1)  # fmt: skip
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1).repeat_interleave(n_opt, 0)
    width = max(len(c) for c in continuations)
    if width == 1:
        return first[:, None, :]
    cache = out.cache if "cache" in out else out.past_key_values  # renamed in transformers 5.2x
    cache.batch_repeat_interleave(n_opt)
    cont = torch.full((len(continuations), width - 1), pad_id, dtype=torch.long)
    cont_mask = torch.zeros((len(continuations), width - 1), dtype=mask.dtype)
    for b, c in enumerate(continuations):
        # Tokens 0..n-2 are fed; their outputs predict tokens 1..n-1.
        cont[b, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
        cont_mask[b, : len(c) - 1] = 1
    cont, cont_mask = cont.to(device), cont_mask.to(device)
    full_mask = torch.cat([mask.repeat_interleave(n_opt, 0), cont_mask], dim=1)
    start = positions[:, -1:].repeat_interleave(n_opt, 0) + 1
    cont_pos = start + torch.arange(width - 1, device=device)[None, :]
    rest = model(input_ids=cont, attention_mask=full_mask, position_ids=cont_pos,
                 use_cache=False, **{_cache_argument(model): cache}).logits  # fmt: skip
    return torch.cat([first[:, None, :], torch.log_softmax(rest.float(), dim=-1)], dim=1)


def _cache_argument(model: nn.Module) -> str:
    """The forward argument that takes a KV cache: `cache` in newer transformers (which
    deprecate `past_key_values`), else `past_key_values`. A peft wrapper is looked through."""
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _summarise(
    scores: Tensor, first_hit: Tensor, gold: Sequence[int], options: list[str], merges: int
) -> BehaviourScores:
    n_opt = len(options)
    ll = scores.view(-1, n_opt)
    lengths = torch.tensor([max(len(o.encode()), 1) for o in options], dtype=torch.float64)
    choices = ll.argmax(dim=1)
    choices_norm = (ll / lengths).argmax(dim=1)
    gold_t = torch.tensor(list(gold))
    first = first_hit.view(-1, n_opt)[torch.arange(len(gold_t)), gold_t]
    n = len(gold_t)
    return BehaviourScores(
        accuracy=float((choices == gold_t).double().mean()),
        accuracy_norm=float((choices_norm == gold_t).double().mean()),
        first_token_accuracy=float(first.double().mean()),
        n_items=n,
        options=options,
        choices=[int(c) for c in choices],
        loglik=[[float(v) for v in row] for row in ll],
        boundary_merges=merges,
    )
