"""Extraction overhead: `extract_activations(layers="all")` vs a bare forward of the model body.

Both sides do the same work on the same batches (prompts sorted by length, left padding,
explicit position ids, no LM head, `torch.inference_mode()`, no KV cache); ours adds the
forward hooks, the last-token copies and the bookkeeping. Repetitions are interleaved
(ours, bare, ours, bare, ...) so drifts in machine load hit both sides; the medians are
compared. Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on the CPU the peak growth of
the process's resident set, sampled every millisecond from /proc/self/statm in a thread.

    python benchmarks/extraction.py --n 128 --batch-size 16 --repeats 5

The model is SmolLM2-135M-Instruct, converted once into $REPRLAB_MODEL_CACHE (default
~/.cache/reprlab/models) by `pull_builtin`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from _smollm2 import load_smollm2

from reprlab.schemas import ExtractionSpec
from reprlab.worker.extract import extract_activations

_ADJ = [
    "wonderful",
    "dreadful",
    "superb",
    "awful",
    "charming",
    "boring",
    "brilliant",
    "flimsy",
    "delightful",
    "rude",
    "spotless",
    "noisy",
    "gorgeous",
    "broken",
    "friendly",
    "cheap",
]
_NOUN = [
    "hotel",
    "blender",
    "film",
    "tent",
    "restaurant",
    "laptop",
    "novel",
    "concert",
    "staff",
    "bicycle",
    "kettle",
    "museum",
    "jacket",
    "ferry",
    "album",
    "garden",
]
_GOOD = {
    "wonderful",
    "superb",
    "charming",
    "brilliant",
    "delightful",
    "spotless",
    "gorgeous",
    "friendly",
}


def _review(rng: random.Random) -> tuple[str, str]:
    adj, noun = rng.choice(_ADJ), rng.choice(_NOUN)
    extra = rng.choice(["", " I would come back.", " Never again.", f" {rng.randint(2, 9)}/10."])
    label = "positive" if adj in _GOOD else "negative"
    return f"Review: The {noun} was {adj}.{extra}", label


def build_prompts(n: int, k: int = 5, seed: int = 0) -> list[str]:
    """`n` k-shot sentiment prompts ('input\\nlabel' demos, blank-line separated)."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        demos = [_review(rng) for _ in range(rng.randint(max(0, k - 2), k))]
        query, _ = _review(rng)
        parts = [f"{text}\nSentiment: {label}" for text, label in demos]
        prompts.append("\n\n".join([*parts, f"{query}\nSentiment:"]))
    return prompts


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[list[int]]:
    """Yields a one-element list that holds the peak memory growth (bytes) when the block ends."""
    result = [0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result[0] = torch.cuda.max_memory_allocated(device) - base
        return
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result[0] = max(peak[0], _rss_bytes()) - base


def bare_forward(model, tokenizer, prompts: list[str], batch_size: int) -> None:
    """The reference: the same sorted, left-padded batches through the body, nothing kept."""
    body = model.get_decoder()
    encoded = tokenizer(prompts)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            seqs = [encoded[i] for i in order[start : start + batch_size]]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, s in enumerate(seqs):
                ids[r, width - len(s) :] = torch.tensor(s)
                mask[r, width - len(s) :] = 1
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, int]:
    with peak_memory(device) as mem:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return seconds, mem[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=128, help="number of prompts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    model, tokenizer, device = load_smollm2(args.device, log=print)
    prompts = build_prompts(args.n)
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    spec = ExtractionSpec(layers="all", batch_size=args.batch_size, max_length=4096)

    def ours() -> object:
        return extract_activations(model, tokenizer, prompts, spec)

    def bare() -> None:
        bare_forward(model, tokenizer, prompts, args.batch_size)

    ours(), bare()  # warm-up: allocator, kernels, lazy imports
    times: dict[str, list[float]] = {"ours": [], "bare": []}
    mems: dict[str, list[int]] = {"ours": [], "bare": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("bare", bare)):
            seconds, mem = _timed(fn, device)
            times[name].append(seconds)
            mems[name].append(mem)

    t_ours, t_bare = statistics.median(times["ours"]), statistics.median(times["bare"])
    print(
        f"model: SmolLM2-135M-Instruct (30 blocks, width 576) on {device}, float32, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"prompts: {args.n} (tokens min/median/max {min(lengths)}/"
        f"{int(statistics.median(lengths))}/{max(lengths)}), batch size {args.batch_size}, "
        f"{args.repeats} interleaved repeats"
    )
    print(
        f"extract_activations(layers='all'): median {t_ours:.3f} s  "
        f"(runs {', '.join(f'{t:.3f}' for t in times['ours'])})"
    )
    print(
        f"bare body forward:                 median {t_bare:.3f} s  "
        f"(runs {', '.join(f'{t:.3f}' for t in times['bare'])})"
    )
    print(f"ratio ours / bare: {t_ours / t_bare:.3f}  (target <= 1.05)")
    what = "max_memory_allocated growth" if device.type == "cuda" else "peak RSS growth"
    print(
        f"peak memory ({what}): ours {max(mems['ours']) / 2**20:.1f} MiB, "
        f"bare {max(mems['bare']) / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
