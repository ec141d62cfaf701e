"""Recipes: ready-made job specs that reproduce the studies reprlab generalises.

`reprlab recipes list` names them, `reprlab recipes show NAME` prints one as YAML to adapt, and
`reprlab submit NAME` / `reprlab run --local NAME` run one as is. Each is a plain spec dict,
validated by `JobSpec` like any other.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from reprlab.schemas.specs import JobSpec


@dataclass(frozen=True)
class Recipe:
    """A named job spec and what it reproduces."""

    name: str
    summary: str
    spec: dict[str, Any]

    def job_spec(self) -> JobSpec:
        return JobSpec.model_validate(self.spec)


_SEEDS = [0, 1, 2, 3, 4]

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            name="icl-vs-sft",
            summary=(
                "Janapati & Ji (study 1) on SmolLM2 and built-in sentiment: zero-shot, ICL "
                "k in {1, 5} and LoRA SFT with checkpoints; TwoNN, Gride and MLE ID per layer "
                "and accuracy."
            ),
            spec={
                "name": "icl-vs-sft",
                "model": {"name": "smollm2-135m-instruct"},
                "dataset": {"name": "sentiment", "n_eval": 200, "n_train": 320, "seed": 0},
                "conditions": [
                    {"name": "zero-shot", "k": 0},
                    {"name": "icl", "k": [1, 5]},
                    {
                        "paradigm": "sft",
                        "name": "lora",
                        "learning_rate": 5e-4,
                        "epochs": 2,
                        "checkpoints": [5, 10, 20, 30],
                    },
                ],
                "metrics": [{"name": "id_twonn"}, {"name": "id_gride"}, {"name": "id_mle"}],
                "accuracy": True,
            },
        ),
        Recipe(
            name="icl-vs-it",
            summary=(
                "Duan et al. (study 4) on SmolLM2: per-layer cosine similarity of last-token "
                "states, ICL-IT, anchor-ICL and anchor-IT, for k in {1, 2, 4} demonstrations "
                "over 5 seeds (mean and standard deviation); and ICL-IT with half or all of "
                "the 4 demonstrations' labels wrong, and with the most / least similar "
                "demonstrations of each query."
            ),
            spec={
                "name": "icl-vs-it",
                "model": {"name": "smollm2-135m-instruct"},
                "dataset": {"name": "sentiment", "n_eval": 64, "n_train": 64, "seed": 0},
                "conditions": [
                    {"name": "anchor", "k": 0},
                    {"name": "icl", "k": [1, 2, 4], "selection": "fixed", "seed": list(_SEEDS)},
                    {
                        "name": "icl-noisy",
                        "k": [4],
                        "selection": "fixed",
                        "seed": list(_SEEDS),
                        "label_noise": [0.5, 1.0],
                    },
                    {"name": "icl-similar", "k": [1, 2, 4], "selection": "similar"},
                    {"name": "icl-dissimilar", "k": [1, 2, 4], "selection": "dissimilar"},
                    {
                        "paradigm": "sft",
                        "name": "it",
                        "train_on": "demos",
                        "k": [1, 2, 4],
                        "seed": list(_SEEDS),
                        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                        "learning_rate": 2e-3,
                        "warmup_ratio": 0.0,
                        "epochs": 20,
                    },
                ],
                "metrics": [],
                "comparisons": [
                    {"a": "icl", "b": "it"},
                    {"a": "icl-noisy", "b": "it"},
                    {"a": "icl-similar", "b": "it"},
                    {"a": "icl-dissimilar", "b": "it"},
                    {"a": "anchor", "b": "icl"},
                    {"a": "anchor", "b": "it"},
                ],
            },
        ),
        Recipe(
            name="landscape",
            summary=(
                "Doimo et al. (study 2) on SmolLM2 and built-in multi-subject multiple choice: "
                "normalised block inputs; 0/1/2/5 demonstrations (the subject's first k, "
                "permuted per query with seed 42) vs "
                "LoRA SFT on all linear layers (loss on the answer) over checkpoints; Gride ID, "
                "density-peak clusters with their ARI vs subject and answer, label overlap; "
                "data overlap and partition ARI from the base model to each checkpoint."
            ),
            spec={
                "name": "landscape",
                "model": {"name": "smollm2-135m-instruct"},
                "dataset": {"name": "mcq", "n_eval": 160, "n_train": 160, "seed": 0},
                "conditions": [
                    {"name": "zero-shot", "k": 0},
                    {
                        "name": "few-shot",
                        "k": [1, 2, 5],
                        "selection": "fixed_per_group",
                        "group_by": "subject",
                        "pick": "first",
                        "seed": 42,
                    },
                    {
                        "paradigm": "sft",
                        "name": "sft",
                        "lora": {"target_modules": "all-linear"},
                        "loss": "answer",
                        "learning_rate": 5e-4,
                        "epochs": 2,
                        "checkpoints": [5, 10],
                    },
                ],
                "extraction": {"hidden_state": "block_input_norm"},
                "metrics": [
                    {"name": "id_gride", "range_max": 64, "report_n2": 32},
                    {"name": "adp", "density_k": 16, "Z": 1.6, "labels": ["subject", "answer"]},
                    {
                        "name": "label_overlap",
                        "labels": ["subject", "answer"],
                        "class_fraction": 0.3,
                    },
                ],
                "comparisons": [
                    {
                        "metric": "data_overlap",
                        "a": "zero-shot",
                        "b": "sft",
                        "steps": True,
                        "ks": [30, 100],
                    },
                    {"metric": "partition_ari", "a": "zero-shot", "b": "sft", "steps": True},
                    {"metric": "data_overlap", "a": "zero-shot", "b": "few-shot", "ks": [30]},
                ],
                "accuracy": True,
            },
        ),
        Recipe(
            name="decoding-icl",
            summary=(
                "Yousefi et al. (study 3) on SmolLM2 and built-in reading comprehension with a "
                "distractor: relevant tokens max-pooled and standardised; RSA with hypothesis "
                "RDMs of the asked attribute and sentence order, probes, and the attention "
                "ratio relevant/distractor, before and after ICL (k = 1, 2, 4, 8); each one's "
                "change from zero-shot correlated with the gain in accuracy, per layer, across "
                "the k (and, for the attention ratio, across queries)."
            ),
            spec={
                "name": "decoding-icl",
                "model": {"name": "smollm2-135m-instruct"},
                "dataset": {
                    "name": "reading_comprehension",
                    "n_eval": 96,
                    "n_train": 64,
                    "seed": 0,
                },
                # Four ICL points besides the reference: a correlation across conditions
                # needs at least 3 (k <= 8 of the 64 pool items, drawn per query).
                "conditions": [{"name": "zero-shot", "k": 0}, {"name": "icl", "k": [1, 2, 4, 8]}],
                "extraction": {
                    "position": "span_max",
                    "span": "relevant",
                    "attention": {"spans": ["relevant", "irrelevant"]},
                },
                "metrics": [
                    {
                        "name": "rsa",
                        "hypotheses": [
                            {"label": "attribute"},
                            {"label": "relevant_first", "kind": "categorical"},
                        ],
                        "rdm": "cosine",
                        "compare": "spearman",
                    },
                    {"name": "probe", "labels": ["attribute", "relevant_first"]},
                    {"name": "attention_ratio"},
                ],
                "comparisons": [{"metric": "rsa", "a": "zero-shot", "b": "icl"}],
                "correlations": [
                    # Resamples the queries, both sides recomputed on each.
                    {"metric": "attention_ratio", "reference": "zero-shot"},
                    {
                        "metric": "rsa",
                        "reference": "zero-shot",
                        "curve": {"hypothesis": "attribute"},
                        "bootstrap": {"n": 500},
                    },
                    # The sentence-order probe (ridge R^2): the attribute's is at 1.0 on
                    # most layers of SmolLM2, so its change is 0. A probe cannot be refitted
                    # on resampled queries, and resampling 4 points says little (a third of
                    # the resamples draw fewer than 3 distinct ones): r and its p-value only.
                    {
                        "metric": "probe",
                        "reference": "zero-shot",
                        "curve": {"label": "relevant_first"},
                        "bootstrap": None,
                    },
                ],
                "accuracy": True,
            },
        ),
    ]
}


def get_recipe(name: str) -> Recipe:
    """A recipe by name; KeyError listing the known names."""
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"no recipe named {name!r}; have {', '.join(sorted(RECIPES))}") from None


def recipe_spec(name: str) -> dict[str, Any]:
    """A fresh copy of a recipe's spec dict, to adapt."""
    return copy.deepcopy(get_recipe(name).spec)
