"""Prompt building: datasets + a condition -> the exact texts the model reads.

Formats (docs/data.md): `plain` (Janapati & Ji: demonstrations `input<delim>output` joined by a
blank line, then the query input) and `mcq` (Doimo et al.: a subject header, then the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reprlab.schemas.specs import ICLCondition, PromptSpec
from reprlab.worker.data import Dataset, Example
from reprlab.worker.errors import SpecError

MCQ_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"


@dataclass(frozen=True)
class Prompt:
    """One prompt: its text, the query it asks, the demonstrations it shows."""

    text: str
    item: int
    demos: tuple[int, ...]


def build_prompts(dataset: Dataset, condition: ICLCondition, spec: PromptSpec) -> list[Prompt]:
    """One prompt per query of `dataset.eval`, with `condition.k` demonstrations each.

    Demonstrations are sampled per query from the training pool with
    `numpy.random.default_rng([condition.seed, i])`, so prompt i does not depend on the others.

    Raises:
        SpecError: k exceeds the demonstration pool.
    """
    k = condition.k
    pool = len(dataset.train)
    if condition.seed < 0:  # numpy seeds must be non-negative; the schema does not bound it
        raise SpecError(
            f"condition '{condition.name}' has seed={condition.seed}",
            hint="use a seed >= 0",
        )
    if k > pool:
        raise SpecError(
            f"condition '{condition.name}' asks for k={k} demonstrations per query but the "
            f"training pool has {pool} items",
            hint=f"raise dataset.n_train to at least {k}, or lower k",
        )
    template = dataset.template if spec.template == "auto" else spec.template
    delim = target_delimiter(dataset, spec)
    prompts = []
    for i, query in enumerate(dataset.eval):
        demos: tuple[int, ...] = ()
        if k:
            rng = np.random.default_rng([condition.seed, i])
            demos = tuple(int(j) for j in rng.choice(pool, size=k, replace=False))
        shown = [dataset.train[j] for j in demos]
        text = _render(query, shown, template, delim, spec)
        prompts.append(Prompt(text=text, item=i, demos=demos))
    return prompts


def _render(
    query: Example, demos: list[Example], template: str, delim: str, spec: PromptSpec
) -> str:
    sep = spec.demo_separator
    parts = [d.input + delim + d.output for d in demos] + [query.input]
    body = sep.join(parts)
    if template == "mcq":
        subject = str(query.labels.get("subject", "general knowledge")).replace("_", " ")
        body = MCQ_HEADER.format(subject=subject) + body
    if spec.instruction:
        body = spec.instruction + sep + body
    return body


def target_delimiter(dataset: Dataset, spec: PromptSpec) -> str:
    """The text between an input and its output: the spec's, else the dataset's default."""
    return spec.target_delimiter if spec.target_delimiter is not None else dataset.target_delimiter
