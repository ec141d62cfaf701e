"""Accuracy scoring: shared-prompt scoring (`score_options`) vs scoring each option separately.

`score_options` runs every prompt once, keeps its KV cache and runs all options' continuations
on top of it; the reference runs `prompt + delimiter + option` as its own sequence for every
option (what lm-evaluation-harness does without prefix sharing). Both use the same batches of
prompts, left padding and explicit positions; the reference keeps only the logits it needs.
Repetitions alternate (ours, reference, ...) and medians are compared; the log-likelihoods must
agree to 1e-3.

    python benchmarks/scoring.py --n 64 --k 5 --repeats 3

Prompts are built-in sentiment items with k demonstrations each (2 options) or MCQ (4 options,
`--dataset mcq`), on SmolLM2-135M-Instruct from $REPRLAB_MODEL_CACHE.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from _smollm2 import load_smollm2

from reprlab.schemas import BuiltinDataset, ICLCondition, PromptSpec
from reprlab.worker.data import load_dataset
from reprlab.worker.evaluate import score_options, split_continuation
from reprlab.worker.extract import left_pad
from reprlab.worker.prompts import build_prompts, prompt_format


def reference(
    model: torch.nn.Module,
    tok: object,
    prompts: list[str],
    options: list[str],
    delim: str,
    batch_size: int,
) -> list[list[float]]:
    """Log-likelihood of each option, every (prompt, option) pair as its own sequence."""
    pad = tok.pad_token_id or 0  # type: ignore[attr-defined]
    out = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            pairs = [split_continuation(tok, p, delim + o) for p in batch for o in options]
            ids, mask = left_pad([c + x for c, x in pairs], pad, torch.device("cpu"))
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            keep = max(len(x) for _, x in pairs) + 1
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                           use_cache=False, logits_to_keep=keep).logits  # fmt: skip
            logp = torch.log_softmax(logits.float(), -1)
            row = []
            for b, (_, cont) in enumerate(pairs):
                pred = logp[b, -len(cont) - 1 : -1]
                row.append(float(pred.gather(-1, torch.tensor(cont)[:, None]).sum()))
            out += [row[i : i + len(options)] for i in range(0, len(row), len(options))]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dataset", choices=["sentiment", "mcq"], default="sentiment")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    model, tok, _ = load_smollm2("cpu")

    data = load_dataset(BuiltinDataset(name=args.dataset, n_eval=args.n, n_train=64))
    spec = PromptSpec()
    prompts = [p.text for p in build_prompts(data, ICLCondition(name="b", k=args.k), spec)]
    options, delim = list(data.options), prompt_format(data, spec).continuation_prefix
    gold = [options.index(q.output) for q in data.eval]

    ours_t, ref_t = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours = score_options(model, tok, prompts, gold, options, delim, batch_size=args.batch_size)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = reference(model, tok, prompts, options, delim, args.batch_size)
        ref_t.append(time.perf_counter() - t)
    worst = max(abs(a - b) for ra, rb in zip(ours.loglik, ref, strict=True)
                for a, b in zip(ra, rb, strict=True))  # fmt: skip
    o, r = statistics.median(ours_t), statistics.median(ref_t)
    print(f"{args.dataset}: {args.n} prompts, k={args.k}, {len(options)} options, "
          f"batch {args.batch_size}, {args.repeats} repeats")  # fmt: skip
    print(f"shared prompt (ours): {o:.2f} s   per-option sequences: {r:.2f} s")
    print(f"ratio ours/reference: {o / r:.2f}   max |log-likelihood difference|: {worst:.2e}")
    if worst > 1e-3:
        raise SystemExit("log-likelihoods disagree")


if __name__ == "__main__":
    main()
