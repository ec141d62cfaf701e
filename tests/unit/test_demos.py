"""Issue 13 part 3: the studies' own draws (given, Doimo's first-k) and Duan et al.'s factors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from reprlab.schemas.demos import parse_demos_file
from reprlab.schemas.specs import ICLCondition, JobSpec, PromptSpec
from reprlab.worker.data import Dataset, Example
from reprlab.worker.demos import read_demos_file
from reprlab.worker.errors import DataError, SpecError
from reprlab.worker.prompts import build_prompts


def _data(n_train: int = 8, n_eval: int = 3) -> Dataset:
    train = [Example(f"t{i}", "positive" if i % 2 else "negative") for i in range(n_train)]
    evals = [Example(f"q{i}", "positive") for i in range(n_eval)]
    return Dataset("toy", train=train, eval=evals, options=["negative", "positive"])


def _given(rows: list[list[int]], k: int = 2) -> ICLCondition:
    return ICLCondition(name="g", k=k, selection="given", demos=rows)


def test_given_draws_are_shown_in_their_order_and_extra_rows_unused() -> None:
    d = _data()
    prompts = build_prompts(d, _given([[3, 1], [0, 7], [5, 4], [2, 6]]), PromptSpec(),
                            given=[[3, 1], [0, 7], [5, 4], [2, 6]])  # fmt: skip
    assert [p.demos for p in prompts] == [(3, 1), (0, 7), (5, 4)]
    assert prompts[0].text == "t3\npositive\n\nt1\npositive\n\nq0\n"


@pytest.mark.parametrize(
    ("rows", "words"),
    [([[0, 1], [2, 99], [1, 2]], "query 1 is given training index 99"),
     ([[0, 1]], "cover 1 queries, the job analyses 3 (query 1 has none)")],
)  # fmt: skip
def test_given_draws_that_do_not_fit_the_pool_name_the_query(rows: list, words: str) -> None:
    with pytest.raises(SpecError, match=words.replace("(", r"\(").replace(")", r"\)")):
        build_prompts(_data(), _given(rows), PromptSpec(), given=rows)


def _job(cond: dict, n_eval: int = 2, n_train: int = 5) -> dict:
    return {"model": {"name": "m"}, "dataset": {"name": "sentiment", "n_eval": n_eval,
            "n_train": n_train}, "conditions": [cond]}  # fmt: skip


@pytest.mark.parametrize(
    ("cond", "words"),
    [({"k": 2, "demos": [[0, 1], [1, 2, 3]]}, "demos for query 1 has 3 indices, k is 2"),
     ({"k": 2, "demos": [[0, 1], [4, 4]]}, "demos for query 1 repeats an index"),
     ({"k": 2, "demos": [[0, 1], [1, 7]]}, "query 1 has training index 7, but the training pool"),
     ({"k": 2, "demos": [[0, 1]]}, "rows for 1 queries but dataset.n_eval is 2"),
     ({"k": [1, 2], "demos": [[0], [1]]}, "k is one number"),
     ({"k": 1}, "needs demos or demos_file"),
     ({"k": 1, "demos": [[0], [1]], "demos_file": "x.json"}, "not both")],
)  # fmt: skip
def test_bad_given_draws_are_refused_at_submission(cond: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        JobSpec.model_validate(_job({"name": "g", "selection": "given", **cond}))
    with pytest.raises(ValidationError, match="apply to selection 'given' only"):
        JobSpec.model_validate(_job({"name": "r", "k": 1, "demos": [[0], [1]]}))


def test_a_published_indices_file_parses_and_is_read_only_under_the_roots(tmp_path: Path) -> None:
    published = {"0": [4, 2], "2": [1, 0], "1": [3, 4]}  # J&J's {"query index": [indices]}
    path = tmp_path / "icl_indices_2_shot.json"
    path.write_text(json.dumps(published))
    assert read_demos_file(str(path), [tmp_path], "g") == [[4, 2], [3, 4], [1, 0]]
    assert parse_demos_file("[[1], [0]]") == [[1], [0]]
    with pytest.raises(DataError, match="REPRLAB_DATA_ROOTS|outside|not under"):
        read_demos_file(str(path), [tmp_path / "elsewhere"], "g")
    for bad, words in (('{"0": [1], "2": [0]}', "query 1 has no entry"),
                       ('{"x": [1]}', "not a query index"), ('{"0": [1.5]}', "list of training"),
                       ("{", "not valid JSON")):  # fmt: skip
        with pytest.raises(ValueError, match=words):
            parse_demos_file(bad)


def test_doimo_pick_first_takes_the_groups_first_k_in_one_permutation_stream() -> None:
    train = [Example(f"{s} dev {i}", "A", {"subject": s}) for i in range(4) for s in ("bio", "geo")]
    queries = [Example(f"{s} q {i}", "B", {"subject": s}) for i in range(3) for s in ("geo", "bio")]
    d = Dataset("mmlu", train=train, eval=queries, template="mcq", target_delimiter=" ")
    cond = ICLCondition(name="fs", k=3, selection="fixed_per_group", pick="first", seed=42)
    prompts = build_prompts(d, cond, PromptSpec())
    first = {s: [j for j, ex in enumerate(train) if ex.labels["subject"] == s][:3]
             for s in ("bio", "geo")}  # fmt: skip
    rng = np.random.default_rng(42)  # Doimo et al.: one stream over the queries in order
    for p, query in zip(prompts, queries, strict=True):
        order = rng.permutation(3)
        assert p.demos == tuple(first[str(query.labels["subject"])][int(o)] for o in order)


def test_label_noise_replaces_round_fraction_k_outputs_with_another_word() -> None:
    d = _data(n_train=20, n_eval=30)
    cond = ICLCondition(name="n", k=4, seed=1, label_noise=0.5)
    prompts = build_prompts(d, cond, PromptSpec())
    for p in prompts:
        assert len(p.noisy) == 2
        for pos, j in enumerate(p.demos):
            shown = d.train[j].output
            flipped = "negative" if shown == "positive" else "positive"
            word = flipped if pos in p.noisy else shown
            assert f"{d.train[j].input}\n{word}\n\n" in p.text
    clean = build_prompts(d, ICLCondition(name="c", k=4, seed=1), PromptSpec())
    assert [p.demos for p in clean] == [p.demos for p in prompts]  # same draws, other labels
    assert all(p.noisy == () for p in clean)
    names = [c.name for c in ICLCondition(name="n", k=4, label_noise=[0.0, 0.5]).expand()]
    assert names == ["n.noise0", "n.noise0.5"]
    open_set = Dataset("open", train=d.train, eval=d.eval, options=[])
    with pytest.raises(SpecError, match="closed set of at least two label words"):
        build_prompts(open_set, cond, PromptSpec())


def test_dissimilar_selection_picks_the_least_similar_least_similar_last() -> None:
    texts = ["red apples are sweet", "the stock market fell today", "green apples are sour",
             "stocks rose on monday"]  # fmt: skip
    d = Dataset("sim", train=[Example(t, "x") for t in texts],
                eval=[Example("are apples sweet or sour", "y")])  # fmt: skip
    (p,) = build_prompts(d, ICLCondition(name="s", k=2, selection="dissimilar"), PromptSpec())
    assert set(p.demos) == {1, 3}


def test_demonstrations_from_another_dataset_keep_the_queries_and_format() -> None:
    d = _data(n_eval=2)
    other = Dataset("mcq", train=[Example(f"Q{i}?\nA. x\nB. y\nAnswer:", "A") for i in range(4)],
                    eval=[], template="mcq", target_delimiter=" ")  # fmt: skip
    prompts = build_prompts(d, ICLCondition(name="x", k=1, seed=0), PromptSpec(), pool=other)
    for p in prompts:
        (j,) = p.demos
        # The job's format (delimiter "\n") renders the other task's demo and ends the query.
        assert p.text == f"{other.train[j].input}\nA\n\nq{p.item}\n"
