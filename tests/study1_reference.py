"""Janapati & Ji's own code path, written out independently of reprlab, for comparisons.

Their `run_icl_exp.generate_prompts` builds each prompt as the demos' `combined` texts each
followed by "\\n\\n", then the query's `input + "\\n"`; `model_util.get_hidden_states_and_
logits_for_last_token` calls the tokenizer on the whole string (default special tokens) and
keeps every entry of `output_hidden_states` at the last position. Here each prompt runs alone
(no padding), which is what their left-padded batches compute.

Also writes small files in their formats: the dataset JSON `{"train": [...], "validation":
[...]}` of `{input, output, combined}` and the demo draws `{"<query index>": [train indices]}`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

QUESTION = " \nQuestion: Was that sentence positive or negative? Answer:"
_WORDS = (
    "a charming dull film the plot sags moving and witty slow tale of love loss brilliant mess "
    "actors shine bored"
).split()


def _sentence(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(_WORDS, size=int(rng.integers(4, 12)))) + " ."


def write_sst2_file(path: Path, n_train: int = 40, n_eval: int = 30, seed: int = 0) -> Path:
    """A file in the study's SST-2 format, with real data's quirks: one validation input
    repeated, and one input in both splits."""
    rng = np.random.default_rng(seed)

    def item(sentence: str) -> dict[str, str]:
        out = "positive" if rng.random() < 0.5 else "negative"
        text = sentence + QUESTION
        return {"input": text, "output": out, "combined": text + "\n" + out}

    train = [item(_sentence(rng)) for _ in range(n_train)]
    validation = [item(_sentence(rng)) for _ in range(n_eval)]
    validation[5] = dict(validation[2])  # a repeated input, as in their 5000
    validation[7] = dict(train[3])  # an input in both splits
    path.write_text(json.dumps({"train": train, "validation": validation}))
    return path


def write_indices_file(path: Path, k: int, n_eval: int, n_train: int, seed: int = 1) -> Path:
    """Published-style draws: query index -> k distinct training indices."""
    rng = np.random.default_rng(seed)
    rows = {str(i): [int(j) for j in rng.choice(n_train, k, replace=False)] for i in range(n_eval)}
    path.write_text(json.dumps(rows))
    return path


def study_prompts(data_file: Path, indices_file: Path | None, n_eval: int) -> list[str]:
    """Their generate_prompts, on their files (k = 0 without an indices file)."""
    data = json.loads(data_file.read_text())
    draws = json.loads(indices_file.read_text()) if indices_file is not None else {}
    prompts = []
    for i in range(n_eval):
        prompt = ""
        for idx in draws.get(str(i), []):
            prompt += data["train"][idx]["combined"] + "\n\n"
        prompts.append(prompt + data["validation"][i]["input"] + "\n")
    return prompts


def study_states(model_dir: Path, prompts: list[str]) -> np.ndarray:
    """[n_prompts, n_layers + 1, hidden] float64: every hidden state at the last token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt")
            hidden = model(**inputs, output_hidden_states=True).hidden_states
            out.append(torch.stack([h[0, -1] for h in hidden]).double().numpy())
    return np.stack(out)


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Per layer: max over items of ||ours - theirs|| / ||theirs|| ([n_items, layers, d])."""
    diff = np.linalg.norm(ours - theirs, axis=-1)
    return (diff / np.linalg.norm(theirs, axis=-1)).max(axis=0)
