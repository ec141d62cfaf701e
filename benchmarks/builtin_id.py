"""Per-layer TwoNN of every built-in dataset's zero-shot last-token states on SmolLM2.

The built-in generators must give point clouds worth measuring: on SmolLM2-135M-Instruct at
the recipes' sizes, TwoNN >= 2 at every layer >= 1 (layer 0, the embedding of the last token,
is one point per distinct final token). The prompts are the pipeline's zero-shot prompts,
which end at the answer position: `input + "\\n"` for sentiment (target delimiter "\\n"), the
input itself, ending in "Answer:" / "y =", for the datasets with delimiter " " (mcq after its
MMLU header). States are the residual stream at the last token, duplicates removed, TwoNN with
10% discard, exactly as the `id_twonn` metric computes it.

    python benchmarks/builtin_id.py                      # all four at their recipe sizes
    python benchmarks/builtin_id.py --only sentiment --accuracy

The last line is a summary of key=value pairs (`min_twonn_layer_ge1_<name>=...`). With
`--accuracy`, zero- and 5-shot sentiment accuracy on 100 queries is printed too: the option
with the higher log-likelihood of `delimiter + option` wins, in the dataset's own format
(`input + "\\n" + label`, as the pipeline scores it) and in a format that names the task
(`"Review: " + input + "\\nSentiment: " + label`).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _smollm2 import load_smollm2

from reprlab.schemas import ExtractionSpec
from reprlab.schemas.specs import BuiltinDataset
from reprlab.worker.data import Dataset, load_dataset
from reprlab.worker.evaluate import split_continuation
from reprlab.worker.extract import extract_activations
from reprlab.worker.metrics.intrinsic_dim import twonn
from reprlab.worker.metrics.knn import knn_graph, remove_duplicates

# n_eval, n_train as in the recipes (linear_regression has no recipe: about as many as the
# others).
SIZES = {
    "sentiment": (200, 320),
    "mcq": (160, 160),
    "reading_comprehension": (96, 64),
    "linear_regression": (100, 64),
}
MCQ_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"


def zero_shot_prompt(dataset: Dataset, index: int, ending: str = "answer") -> str:
    """The query's zero-shot prompt, ending at the answer position (see the module doc), or
    with `ending="input"` at the input's last character (prompts before the answer-position
    change)."""
    item = dataset.eval[index]
    text = item.input + (dataset.target_delimiter.rstrip(" ") if ending == "answer" else "")
    if dataset.template == "mcq":
        subject = str(item.labels.get("subject", "general knowledge")).replace("_", " ")
        text = MCQ_HEADER.format(subject=subject) + text
    return text


def twonn_per_layer(states: torch.Tensor) -> list[tuple[float, int]]:
    """(TwoNN, distinct points) of states [n, layers, hidden] at each layer."""
    out = []
    for layer in range(states.shape[1]):
        x, _ = remove_duplicates(states[:, layer].to(torch.float64))
        n = x.shape[0]
        value = twonn(knn_graph(x, 2), 0.1).value if n >= 3 else float("nan")
        out.append((value, n))
    return out


def measure(
    model, tokenizer, name: str, n_eval: int, n_train: int, seed: int, batch: int, ending: str
):
    dataset = load_dataset(BuiltinDataset(name=name, n_eval=n_eval, n_train=n_train, seed=seed))
    prompts = [zero_shot_prompt(dataset, i, ending) for i in range(len(dataset.eval))]
    spec = ExtractionSpec(layers="all", batch_size=batch, max_length=4096)
    acts = extract_activations(model, tokenizer, prompts, spec)
    return twonn_per_layer(acts.states), sum(acts.n_tokens) / len(acts.n_tokens)


# Sentiment prompt formats for the accuracy check: (input prefix, delimiter). "plain" is the
# dataset's own (`input + "\n" + label`); "cue" names the task in every demonstration.
FORMATS = {"plain": ("", "\n"), "cue": ("Review: ", "\nSentiment: ")}


def sentiment_accuracy(model, tokenizer, n: int, k: int, seed: int, fmt: str) -> float:
    """Accuracy of log p(delimiter + option | prompt) over {positive, negative} with k
    demonstrations drawn per query from a pool of 64, in prompt format `fmt`."""
    import numpy as np

    prefix, delim = FORMATS[fmt]
    d = load_dataset(BuiltinDataset(name="sentiment", n_eval=n, n_train=64, seed=seed))
    options = ["negative", "positive"]
    hits = 0
    with torch.inference_mode():
        for i, item in enumerate(d.eval):
            rng = np.random.default_rng([seed, i])
            demos = [d.train[j] for j in rng.choice(len(d.train), size=k, replace=False)]
            shots = "".join(f"{prefix}{e.input}{delim}{e.output}\n\n" for e in demos)
            context = shots + prefix + item.input
            scores = []
            for option in options:
                ctx, cont = split_continuation(tokenizer, context, delim + option)
                ids = torch.tensor([ctx + cont], device=next(model.parameters()).device)
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
                per_token = logp.gather(-1, ids[0, 1:, None])[:, 0]
                scores.append(float(per_token[len(ctx) - 1 :].sum()))
            hits += options[int(np.argmax(scores))] == item.output
    return hits / len(d.eval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--accuracy", action="store_true", help="also sentiment accuracy")
    parser.add_argument(
        "--ending", choices=["answer", "input"], default="answer",
        help="'answer': prompts end at the answer position (the pipeline's); 'input': at the "
        "input's end (sentiment without the final newline)",
    )  # fmt: skip
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    model, tokenizer, device = load_smollm2(args.device, log=print)

    summary: dict[str, str] = {}
    for name in args.only:
        n_eval, n_train = SIZES[name]
        start = time.perf_counter()
        per_layer, tokens = measure(
            model, tokenizer, name, n_eval, n_train, args.seed, args.batch_size, args.ending
        )
        seconds = time.perf_counter() - start
        print(f"{name}: n_eval={n_eval}, mean prompt tokens {tokens:.1f}, {seconds:.1f} s")
        print("  layer  twonn  distinct")
        for layer, (value, n) in enumerate(per_layer):
            print(f"  {layer:5d}  {value:5.2f}  {n:8d}")
        rest = [v for v, _ in per_layer[1:]]
        worst = min(range(len(rest)), key=lambda i: rest[i]) + 1
        summary[f"min_twonn_layer_ge1_{name}"] = f"{min(rest):.2f}"
        summary[f"argmin_layer_{name}"] = str(worst)
        summary[f"twonn_layer0_{name}"] = f"{per_layer[0][0]:.2f}"
    if args.accuracy:
        for fmt in FORMATS:
            for k in (0, 5):
                acc = sentiment_accuracy(model, tokenizer, 100, k, args.seed, fmt)
                print(f"sentiment accuracy, {fmt} format, k={k}: {acc:.3f}")
                summary[f"sentiment_accuracy_{fmt}_k{k}"] = f"{acc:.3f}"
    print(" ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
