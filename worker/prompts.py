"""Prompt building: datasets + a condition -> the exact texts the model reads.

Formats (docs/data.md): `plain` (Janapati & Ji: demonstrations `input<delim>output` joined by a
blank line, then the query input) and `mcq` (Doimo et al.: a subject header, then the same).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from reprlab.schemas.specs import ICLCondition, PromptSpec
from reprlab.worker.data import Dataset, Example
from reprlab.worker.errors import SpecError

MCQ_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"


@dataclass(frozen=True)
class Prompt:
    """One prompt: its text, the query it asks, the demonstrations it shows.

    `spans` are the query item's named spans as character ranges [start, end) of `text`.
    """

    text: str
    item: int
    demos: tuple[int, ...]
    spans: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def build_prompts(dataset: Dataset, condition: ICLCondition, spec: PromptSpec) -> list[Prompt]:
    """One prompt per query of `dataset.eval`, with `condition.k` demonstrations each.

    Demonstrations follow `condition.selection` (see `ICLCondition`); every random draw for
    query i uses `numpy.random.default_rng([condition.seed, i])` (group sets use the group's
    rank), so prompt i does not depend on the others. The query's spans are carried over,
    shifted by the text before the query (its input always ends the prompt).

    Raises:
        SpecError: k exceeds the demonstration pool (or a group's share of it), a query lacks
            the grouping label, or the condition is an unexpanded k-sweep.
    """
    k = condition.k_value
    pool = len(dataset.train)
    if condition.seed_value < 0:  # numpy seeds must be non-negative
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
    chosen = _select(dataset, condition, k)
    prompts = []
    for i, query in enumerate(dataset.eval):
        shown = [dataset.train[j] for j in chosen[i]]
        text = _render(query, shown, template, delim, spec)
        offset = len(text) - len(query.input)
        spans = {name: (start + offset, end + offset) for name, (start, end) in query.spans.items()}
        prompts.append(Prompt(text=text, item=i, demos=chosen[i], spans=spans))
    return prompts


def _select(dataset: Dataset, condition: ICLCondition, k: int) -> list[tuple[int, ...]]:
    """Training-pool indices of the demonstrations of each query, in prompt order."""
    n = len(dataset.eval)
    if k == 0:
        return [()] * n
    if condition.selection == "random":
        pool = len(dataset.train)
        return [
            tuple(
                int(j)
                for j in np.random.default_rng([condition.seed_value, i]).choice(pool, k, False)
            )
            for i in range(n)
        ]
    if condition.selection == "fixed":
        return [fixed_demos(dataset, k, condition.seed_value)] * n
    if condition.selection == "fixed_per_group":
        return _fixed_per_group(dataset, condition, k)
    return _most_similar(dataset, k)


def fixed_demos(dataset: Dataset, k: int, seed: int) -> tuple[int, ...]:
    """One set of k training-pool indices drawn with `seed` (ICL 'fixed' and IT on demos).

    Raises:
        SpecError: the pool has fewer than k items.
    """
    pool = len(dataset.train)
    if k > pool:
        raise SpecError(
            f"{k} demonstrations asked for but the training pool has {pool} items",
            hint=f"raise dataset.n_train to at least {k}, or lower k",
        )
    rng = np.random.default_rng([seed, 7_919])
    return tuple(int(j) for j in rng.choice(pool, k, replace=False))


def training_texts(
    dataset: Dataset, indices: Sequence[int], spec: PromptSpec
) -> list[tuple[str, str]]:
    """(prompt, continuation) of each training item: its zero-shot prompt, then delimiter +
    output, so a tuned model is trained on exactly the format it is analysed in."""
    template = dataset.template if spec.template == "auto" else spec.template
    delim = target_delimiter(dataset, spec)
    out = []
    for j in indices:
        ex = dataset.train[j]
        out.append((_render(ex, [], template, delim, spec), delim + ex.output))
    return out


def _group(example: Example, field: str, where: str, condition: ICLCondition) -> str:
    if field not in example.labels:
        raise SpecError(
            f"condition '{condition.name}' groups demonstrations by '{field}', but {where} has "
            "no such label",
            hint="set group_by to a label every item has (e.g. 'subject'), or use 'random'",
        )
    return str(example.labels[field])


def _fixed_per_group(dataset: Dataset, condition: ICLCondition, k: int) -> list[tuple[int, ...]]:
    by_group: dict[str, list[int]] = {}
    for j, ex in enumerate(dataset.train):
        by_group.setdefault(
            _group(ex, condition.group_by, f"training item {j}", condition), []
        ).append(j)
    fixed: dict[str, list[int]] = {}
    for rank, group in enumerate(sorted(by_group)):
        members = by_group[group]
        if len(members) >= k:
            rng = np.random.default_rng([condition.seed_value, 1_000_003, rank])
            fixed[group] = [members[int(m)] for m in rng.choice(len(members), k, replace=False)]
    out = []
    for i, query in enumerate(dataset.eval):
        group = _group(query, condition.group_by, f"query {i}", condition)
        if group not in fixed:
            have = len(by_group.get(group, []))
            raise SpecError(
                f"condition '{condition.name}' needs k={k} training items with "
                f"{condition.group_by}={group!r}, but the pool has {have}",
                hint="raise dataset.n_train, or lower k",
            )
        order = np.random.default_rng([condition.seed_value, i]).permutation(k)
        out.append(tuple(fixed[group][int(o)] for o in order))
    return out


def _most_similar(dataset: Dataset, k: int) -> list[tuple[int, ...]]:
    """The k training inputs closest to each query by TF-IDF cosine, the closest last."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    train = vectorizer.fit_transform([ex.input for ex in dataset.train])
    queries = vectorizer.transform([ex.input for ex in dataset.eval])
    sims = (queries @ train.T).toarray()
    out = []
    for row in sims:
        # Stable: ties go to the lower index; reverse so the most similar is next to the query.
        best = np.argsort(-row, kind="stable")[:k]
        out.append(tuple(int(j) for j in best[::-1]))
    return out


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
