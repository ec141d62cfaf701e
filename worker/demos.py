"""Demonstration selection: which training-pool items each query is shown, in prompt order.

Every selection returns, per query of `dataset.eval`, a tuple of training-pool indices. Random
draws for query i use `numpy.random.default_rng([condition.seed, i])` (group sets use the
group's rank), so the demonstrations of query i do not depend on the other queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reprlab.schemas.demos import parse_demos_file
from reprlab.schemas.specs import ICLCondition
from reprlab.worker.data import Dataset, Example
from reprlab.worker.data.files import data_path, read_checked
from reprlab.worker.errors import DataError, SpecError

MAX_DEMOS_BYTES = 64 * 1024 * 1024


def select_demos(
    dataset: Dataset,
    condition: ICLCondition,
    k: int,
    given: Sequence[Sequence[int]] | None = None,
) -> list[tuple[int, ...]]:
    """Training-pool indices of the demonstrations of each query, in prompt order.

    Args:
        dataset: The queries (`eval`) and the demonstration pool (`train`).
        condition: The ICL condition (selection, seed, group_by, pick).
        k: Demonstrations per query.
        given: selection 'given': per query, its indices (`condition.demos`, or the parsed
            `demos_file`).

    Raises:
        SpecError: a given draw that does not fit the pool or k, or see the selections.
    """
    n = len(dataset.eval)
    if condition.selection == "given":
        return _given(dataset, condition, k, given)
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
    return _by_similarity(dataset, k, most=condition.selection == "similar")


def _given(
    dataset: Dataset, condition: ICLCondition, k: int, given: Sequence[Sequence[int]] | None
) -> list[tuple[int, ...]]:
    """The published draws, checked against the pool: query i shows given[i] in that order."""
    name, n, pool = condition.name, len(dataset.eval), len(dataset.train)
    if given is None:
        raise SpecError(f"condition '{name}': selection 'given' has no demos")
    if len(given) < n:
        raise SpecError(
            f"condition '{name}': the given demos cover {len(given)} queries, the job analyses "
            f"{n} (query {len(given)} has none)",
            hint="give one row of indices per analysed query, or lower dataset.n_eval",
        )
    out = []
    for i, row in enumerate(given[:n]):
        if len(row) != k:
            raise SpecError(f"condition '{name}': query {i} is given {len(row)} demos, k is {k}")
        if len(set(row)) != len(row):
            raise SpecError(f"condition '{name}': query {i} is given index {row} with a repeat")
        bad = [j for j in row if not 0 <= j < pool]
        if bad:
            raise SpecError(
                f"condition '{name}': query {i} is given training index {bad[0]}, but the "
                f"training pool has {pool} items (indices 0..{pool - 1})",
                hint="raise dataset.n_train to cover the indices, or fix the draws",
            )
        out.append(tuple(int(j) for j in row))
    return out


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
        if len(members) < k:
            continue
        if condition.pick == "first":  # file order: Doimo et al.'s first k dev items
            fixed[group] = members[:k]
        else:
            rng = np.random.default_rng([condition.seed_value, 1_000_003, rank])
            fixed[group] = [members[int(m)] for m in rng.choice(len(members), k, replace=False)]
    stream = np.random.default_rng(condition.seed_value)  # 'first': one stream over queries
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
        if condition.pick == "first":
            order = stream.permutation(k)
        else:
            order = np.random.default_rng([condition.seed_value, i]).permutation(k)
        out.append(tuple(fixed[group][int(o)] for o in order))
    return out


def _by_similarity(dataset: Dataset, k: int, *, most: bool) -> list[tuple[int, ...]]:
    """The k training inputs closest to (`most`) or farthest from each query by TF-IDF cosine;
    the extreme one last, next to the query."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    train = vectorizer.fit_transform([ex.input for ex in dataset.train])
    queries = vectorizer.transform([ex.input for ex in dataset.eval])
    sims = (queries @ train.T).toarray()
    out = []
    for row in sims:
        # Stable: ties go to the lower index; reverse so the extreme one is next to the query.
        best = np.argsort(-row if most else row, kind="stable")[:k]
        out.append(tuple(int(j) for j in best[::-1]))
    return out


def noisy_labels(
    pool: Dataset, demos: Sequence[int], fraction: float, seed: int, query: int
) -> dict[int, str]:
    """Positions (in `demos`) whose output is replaced, and the wrong label word of each.

    round(fraction * k) positions are drawn without replacement, and each gets a label word
    other than its own, uniformly, from `numpy.random.default_rng([seed, 0x4E015E, query])`.

    Raises:
        SpecError: label noise on a pool without a closed label set of two or more words.
    """
    m = int(round(fraction * len(demos)))
    if m == 0:
        return {}
    words = list(pool.options)
    if len(words) < 2:
        raise SpecError(
            f"label_noise needs a closed set of at least two label words; the '{pool.name}' "
            "demonstrations have none",
            hint="use data with few distinct outputs (at most 20), or set label_noise to 0",
        )
    rng = np.random.default_rng([seed, 0x4E015E, query])
    out = {}
    for pos in sorted(int(p) for p in rng.choice(len(demos), m, replace=False)):
        own = pool.train[demos[pos]].output
        others = [w for w in words if w != own]
        out[pos] = others[int(rng.integers(len(others)))]
    return out


def read_demos_file(raw: str, data_roots: Sequence[Path], condition: str) -> list[list[int]]:
    """The draws of a `demos_file` under the data roots (`{"<query>": [train indices]}`).

    Raises:
        DataError: the file is outside the roots, missing, too large or malformed.
    """
    field = f"conditions.{condition}.demos_file"
    path = data_path(raw, data_roots, what=field)
    data = read_checked(path, raw, what="demos_file", field=field, max_bytes=MAX_DEMOS_BYTES)
    try:
        return parse_demos_file(data.decode("utf-8"), source=path.name)
    except UnicodeDecodeError:
        raise DataError(f"demos_file {raw} is not UTF-8 text") from None
    except ValueError as exc:
        raise DataError(str(exc), hint="fix the entry named") from None
