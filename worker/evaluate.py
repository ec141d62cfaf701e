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
    device = next(model.parameters()).device
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    scores = torch.empty(len(pairs), dtype=torch.float64)
    first_hit = torch.zeros(len(pairs), dtype=torch.bool)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            if should_stop is not None and should_stop():
                raise JobCancelled()
            idx = order[start : start + batch_size]
            seqs = [pairs[i][0] + pairs[i][1] for i in idx]
            ids, mask = left_pad(seqs, pad_id, device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                           use_cache=False).logits  # fmt: skip
            logp = torch.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(idx):
                n_cont = len(pairs[i][1])
                # Positions -n_cont-1 .. -2 predict the continuation tokens.
                pred = logp[row, -n_cont - 1 : -1]
                target = torch.tensor(pairs[i][1], device=pred.device)
                scores[i] = pred.gather(-1, target[:, None]).sum().double().cpu()
                a = min(skip[i], n_cont - 1)  # the first token of the answer itself
                first_hit[i] = bool(pred[a].argmax() == target[a])
            if progress is not None:
                progress(min(start + len(idx), len(order)), len(order))
    return _summarise(scores, first_hit, gold, list(options))


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
