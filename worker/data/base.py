"""The in-memory dataset every stage works on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from reprlab.worker.errors import DataError


@dataclass(frozen=True)
class Example:
    """One labelled item: the model sees `input`, the target is `output`."""

    input: str
    output: str
    labels: Mapping[str, str | int | float] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    """A demonstration/training pool and the queries that are analysed (disjoint)."""

    name: str
    train: list[Example]
    eval: list[Example]
    template: Literal["plain", "mcq"] = "plain"
    target_delimiter: str = "\n"
    options: list[str] = field(default_factory=list)


def generate_distinct(
    name: str, n: int, capacity: int, seed: int, draw: Callable[[np.random.Generator, int], Example]
) -> list[Example]:
    """`n` examples with pairwise distinct inputs, drawn by `draw(rng, i)`.

    Refuses (DataError) sizes above half the generator's combinatorial capacity, where
    rejection sampling would crawl and near-duplicates would dominate.
    """
    limit = capacity // 2
    if n > limit:
        raise DataError(
            f"the built-in '{name}' dataset can generate at most {limit} distinct items; "
            f"the spec asks for {n} (n_eval + n_train)",
            hint=f"lower dataset.n_eval and/or dataset.n_train so their sum is <= {limit}",
        )
    rng = np.random.default_rng([seed, 0x5EED])
    seen: set[str] = set()
    out: list[Example] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise DataError(
                f"could only generate {len(out)} distinct '{name}' items of the {n} asked for",
                hint="lower dataset.n_eval and/or dataset.n_train",
            )
        ex = draw(rng, len(out))
        if ex.input not in seen:
            seen.add(ex.input)
            out.append(ex)
    return out


def split(
    name: str, examples: list[Example], n_eval: int, n_train: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """Seeded shuffle, then eval = the first n_eval, train = the next n_train."""
    if len(examples) < n_eval + n_train:
        raise DataError(
            f"dataset '{name}' has {len(examples)} items but the spec asks for n_eval={n_eval} "
            f"+ n_train={n_train} = {n_eval + n_train}",
            hint="lower dataset.n_eval / dataset.n_train, or provide more items",
        )
    order = np.random.default_rng([seed, 0x5B17]).permutation(len(examples))
    shuffled = [examples[i] for i in order]
    return shuffled[:n_eval], shuffled[n_eval : n_eval + n_train]
