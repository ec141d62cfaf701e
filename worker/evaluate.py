"""Behavioural accuracy: how often the model picks the right label, scored by likelihood.

For every prompt and every label option, the continuation `delimiter + option` is scored by
teacher forcing (sum of the log-probabilities of its tokens given the prompt). Reported, as in
lm-evaluation-harness:
- `accuracy`: the gold option has the highest log-likelihood;
- `accuracy_norm`: the same after dividing each option's log-likelihood by its length in bytes;
- `first_token_accuracy`: given the prompt and the delimiter, the greedy (argmax) next token is
  the first token of the gold answer (the delimiter's own tokens, e.g. a newline, are not
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
SCORING_VERSION = "2"


@dataclass(frozen=True)
class BehaviourScores:
    """Accuracy of one condition and the per-item choices behind it."""

    accuracy: float
    accuracy_norm: float
    first_token_accuracy: float
    n_items: int
    options: list[str]
    choices: list[int]  # per item: the option with the highest log-likelihood
    loglik: list[list[float]]  # per item, per option


def split_continuation(
    tokenizer: Any, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation such that their concatenation encodes both.

    The whole text is encoded once and cut where the context's own encoding ends, so a token
    that merges across the boundary is not double counted (lm-evaluation-harness's rule).
    """
    whole: list[int] = tokenizer(context + continuation)["input_ids"]
    ctx: list[int] = tokenizer(context)["input_ids"]
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx) :]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    return ctx, list(cont)


def _delimiter_tokens(
    tokenizer: Any, context: str, delimiter: str, pair: tuple[list[int], list[int]]
) -> int:
    """How many leading continuation tokens encode only the delimiter (0 if they merge)."""
    if not delimiter:
        return 0
    ctx, cont = pair
    with_delim: list[int] = tokenizer(context + delimiter)["input_ids"]
    whole = ctx + cont
    if with_delim[: len(ctx)] == ctx and whole[: len(with_delim)] == with_delim:
        return len(with_delim) - len(ctx)
    return 0


def score_options(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    gold: Sequence[int],
    options: Sequence[str],
    delimiter: str,
    *,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BehaviourScores:
    """Log-likelihood scoring of every option for every prompt (see the module docstring).

    Raises:
        SpecError: no options, or a gold index outside the options.
        JobCancelled: `should_stop()` returned True between batches.
    """
    if not options:
        raise SpecError("accuracy needs a closed set of label options; this dataset has none")
    if len(gold) != len(prompts) or any(not 0 <= g < len(options) for g in gold):
        raise SpecError("every item's output must be one of the dataset's options")
    pairs = [split_continuation(tokenizer, p, delimiter + o) for p in prompts for o in options]
    skip = [
        _delimiter_tokens(tokenizer, p, delimiter, pairs[i * len(options) + j])
        for i, p in enumerate(prompts)
        for j in range(len(options))
    ]
    n_opt = len(options)
    device = next(model.parameters()).device
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    scores = torch.empty(len(pairs), dtype=torch.float64)
    first_hit = torch.zeros(len(pairs), dtype=torch.bool)
    # The context's tokens are the same for every option (its own encoding), so each prompt
    # is run once and its KV cache is shared by the options' continuations.
    order = sorted(range(len(prompts)), key=lambda i: len(pairs[i * n_opt][0]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            if should_stop is not None and should_stop():
                raise JobCancelled()
            idx = order[start : start + batch_size]
            rows = [i * n_opt + j for i in idx for j in range(n_opt)]
            logp = _continuation_logprobs(
                model, [pairs[i * n_opt][0] for i in idx], [pairs[r][1] for r in rows],
                n_opt, pad_id, device,
            )  # fmt: skip
            for b, r in enumerate(rows):
                cont = pairs[r][1]
                pred = logp[b, : len(cont)]
                target = torch.tensor(cont, device=pred.device)
                scores[r] = pred.gather(-1, target[:, None]).sum().double().cpu()
                a = min(skip[r], len(cont) - 1)  # the first token of the answer itself
                first_hit[r] = bool(pred[a].argmax() == target[a])
            if progress is not None:
                progress(min(start + len(idx), len(order)) * n_opt, len(order) * n_opt)
    return _summarise(scores, first_hit, gold, list(options))


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
    scores: Tensor, first_hit: Tensor, gold: Sequence[int], options: list[str]
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
    )
