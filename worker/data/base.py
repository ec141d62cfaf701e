"""The in-memory dataset every stage works on."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np

from reprlab.worker.errors import DataError

T = TypeVar("T")


@dataclass(frozen=True)
class Example:
    """One labelled item: the model sees `input`, the target is `output`.

    `spans` names character ranges [start, end) of `input` (e.g. 'relevant', 'irrelevant') that
    extraction can pool over or measure the attention paid to.
    """

    input: str
    output: str
    labels: Mapping[str, str | int | float] = field(default_factory=dict)
    spans: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    """A demonstration/training pool and the queries that are analysed (disjoint)."""

    name: str
    train: list[Example]
    eval: list[Example]
    template: Literal["plain", "mcq"] = "plain"
    target_delimiter: str = "\n"
    options: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BuiltinGenerator:
    """A built-in dataset: how many distinct items it has, how to draw one, its format.

    `capacity` is a lower bound of distinct inputs (`generate_distinct` serves half of it);
    `draw(rng, i)` makes item i; `options` is the closed label set for accuracy (empty if open).
    """

    capacity: int
    draw: Callable[[Draws, int], Example]
    template: Literal["plain", "mcq"] = "plain"
    target_delimiter: str = "\n"
    options: tuple[str, ...] = ()


class Draws:
    """Uniform random draws from a seeded numpy stream, buffered.

    Generators make ~10 small draws per item; `Generator.integers` costs microseconds per call,
    which made 10 000 items take seconds. Reading pre-drawn floats costs a list index.
    """

    _BLOCK = 8192

    def __init__(self, seed: int | Sequence[int]) -> None:
        self._rng = np.random.default_rng(seed)
        self._buf: list[float] = []
        self._pos = 0

    def random(self) -> float:
        """A float uniform in [0, 1)."""
        if self._pos == len(self._buf):
            self._buf, self._pos = self._rng.random(self._BLOCK).tolist(), 0
        u = self._buf[self._pos]
        self._pos += 1
        return u

    def integers(self, low: int, high: int | None = None) -> int:
        """An int uniform in [low, high), or in [0, low) when high is None (numpy's rule)."""
        if high is None:
            low, high = 0, low
        return low + int(self.random() * (high - low))

    def pick(self, seq: Sequence[T]) -> T:
        """A uniformly chosen element of a non-empty sequence."""
        return seq[int(self.random() * len(seq))]


def generate_distinct(
    name: str, n: int, capacity: int, seed: int, draw: Callable[[Draws, int], Example]
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
    rng = Draws([seed, 0x5EED])
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
