"""Prompt formats (studies 1 and 2) and per-query demonstration sampling."""

from __future__ import annotations

import numpy as np
import pytest

from reprlab.schemas.specs import BuiltinDataset, ICLCondition, PromptSpec
from reprlab.worker.data import Dataset, Example, load_dataset
from reprlab.worker.errors import SpecError
from reprlab.worker.prompts import Prompt, build_prompts

HEADER = "The following are multiple choice questions (with answers) about {}.\n\n"


def _plain(n_train: int = 3) -> Dataset:
    train = [Example(f"t{i}", f"L{i}", {}) for i in range(n_train)]
    return Dataset(
        "toy",
        train=train,
        eval=[Example("q0", "y", {}), Example("q1", "n", {})],
        template="plain",
        target_delimiter="\n",
        options=[],
    )


def _mcq(n_train: int = 3) -> Dataset:
    def item(q: str, letter: str, subject: str = "elementary_arithmetic") -> Example:
        return Example(f"{q}\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:", letter, {"subject": subject})

    train = [item(f"Demo {i}?", "ABCD"[i % 4], "chemistry") for i in range(n_train)]
    return Dataset(
        "mcq",
        train=train,
        eval=[item("Query?", "B"), Example("Bare?\nA. x\nB. y\nC. z\nD. w\nAnswer:", "A", {})],
        template="mcq",
        target_delimiter=" ",
        options=["A", "B", "C", "D"],
    )


def _build(d: Dataset, k: int, seed: int = 0, **prompt: object) -> list[Prompt]:
    return build_prompts(d, ICLCondition(name=f"k{k}", k=k, seed=seed), PromptSpec(**prompt))


def _expected_demos(seed: int, i: int, pool: int, k: int) -> tuple[int, ...]:
    rng = np.random.default_rng([seed, i])
    return tuple(int(j) for j in rng.choice(pool, size=k, replace=False))


def test_plain_k0_ends_at_the_answer_position_after_the_delimiter() -> None:
    prompts = _build(_plain(), 0)
    assert prompts == [Prompt("q0\n", 0, ()), Prompt("q1\n", 1, ())]
    assert _build(_plain(), 0, instruction="Classify.")[0].text == "Classify.\n\nq0\n"


def test_plain_k1_exact_text() -> None:
    (p, _) = _build(_plain(n_train=1), 1)
    assert p == Prompt("t0\nL0\n\nq0\n", 0, (0,))


def test_plain_k3_exact_text_in_demo_order() -> None:
    prompts = _build(_plain(), 3, seed=7)
    for i, p in enumerate(prompts):
        assert p.demos == _expected_demos(7, i, 3, 3)
        a, b, c = p.demos
        assert p.text == f"t{a}\nL{a}\n\nt{b}\nL{b}\n\nt{c}\nL{c}\n\nq{i}\n"
    orders = {p.demos for seed in range(10) for p in _build(_plain(), 3, seed=seed)}
    assert len(orders) > 1  # the order of the demonstrations is sampled too


def test_plain_with_custom_delimiter_separator_and_instruction() -> None:
    (p, _) = _build(
        _plain(n_train=1), 1, target_delimiter=" => ", demo_separator="\n", instruction="Go."
    )
    assert p.text == "Go.\nt0 => L0\nq0 =>"  # the suffix: the delimiter less trailing spaces


def test_mcq_k0_k1_k3_exact_text() -> None:
    d = _mcq()
    query = "Query?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
    header = HEADER.format("elementary arithmetic")  # underscores shown as spaces
    assert _build(d, 0)[0].text == header + query
    (p1, _) = _build(_mcq(n_train=1), 1)
    demo0 = "Demo 0?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
    assert p1.text == f"{header}{demo0} A\n\n{query}"
    (p3, _) = _build(d, 3, seed=2)
    demos = "\n\n".join(f"{d.train[j].input} {d.train[j].output}" for j in p3.demos)
    assert sorted(p3.demos) == [0, 1, 2]
    assert p3.text == f"{header}{demos}\n\n{query}"


def test_mcq_subject_fallback_instruction_and_template_override() -> None:
    d = _mcq()
    bare = "Bare?\nA. x\nB. y\nC. z\nD. w\nAnswer:"
    assert _build(d, 0)[1].text == HEADER.format("general knowledge") + bare
    with_instruction = _build(d, 0, instruction="Answer with a letter.")[1].text
    assert (
        with_instruction == "Answer with a letter.\n\n" + HEADER.format("general knowledge") + bare
    )
    assert _build(d, 0, template="plain")[1].text == bare
    (p,) = _build(_mcq(n_train=1), 1, template="plain", target_delimiter="\n")[:1]
    assert p.text.startswith("Demo 0?") and "Answer:\nA\n\nQuery?" in p.text
    assert p.text.endswith("Answer:\n")
    expected = HEADER.format("general knowledge") + "q0\n"
    assert _build(_plain(), 0, template="mcq")[0].text == expected


def test_demos_are_distinct_seeded_per_query_and_deterministic() -> None:
    train = [Example(f"t{i}", "x", {}) for i in range(50)]
    evals = [Example(f"q{i}", "y", {}) for i in range(40)]
    d = Dataset("toy", train=train, eval=evals, template="plain", target_delimiter="\n", options=[])
    a = build_prompts(d, ICLCondition(name="a", k=5, seed=1), PromptSpec())
    b = build_prompts(d, ICLCondition(name="b", k=5, seed=1), PromptSpec())
    c = build_prompts(d, ICLCondition(name="c", k=5, seed=2), PromptSpec())
    assert a == b and [p.demos for p in a] != [p.demos for p in c]
    assert [p.item for p in a] == list(range(40))
    assert all(len(set(p.demos)) == 5 for p in a)
    assert all(p.demos == _expected_demos(1, p.item, 50, 5) for p in a)
    assert len({p.demos for p in a}) > 30  # sampled per query, not one shared set
    # Prompt i does not depend on how many queries there are.
    fewer = Dataset("toy", train=train, eval=evals[:10], template="plain", target_delimiter="\n",
                    options=[])  # fmt: skip
    assert build_prompts(fewer, ICLCondition(name="a", k=5, seed=1), PromptSpec()) == a[:10]


def test_demonstrations_never_include_the_query() -> None:
    d = load_dataset(BuiltinDataset(name="sentiment", n_eval=60, n_train=20, seed=5))
    prompts = build_prompts(d, ICLCondition(name="icl", k=10, seed=3), PromptSpec())
    for p in prompts:
        query = d.eval[p.item].input
        assert p.text.endswith("\n\n" + query + "\n")
        assert all(d.train[j].input != query for j in p.demos)
        assert all(f"{d.train[j].input}\n{d.train[j].output}" in p.text for j in p.demos)


def test_k_larger_than_the_pool_is_a_spec_error_naming_n_train() -> None:
    with pytest.raises(SpecError) as err:
        build_prompts(_plain(), ICLCondition(name="too-many", k=5), PromptSpec())
    message = err.value.message
    assert "too-many" in message and "k=5" in message and "pool has 3 items" in message
    assert err.value.hint is not None and "n_train" in err.value.hint
    assert len(_build(_plain(), 3)) == 2  # k equal to the pool size is fine


# --- issue 3: k-sweeps and selection strategies ----------------------------------------------


def _grouped() -> Dataset:
    train = [
        Example(f"{s} fact {i}", "x", {"subject": s}) for s in ("bio", "geo") for i in range(6)
    ]
    queries = [
        Example(f"{s} question {i}", "y", {"subject": s}) for i in range(4) for s in ("geo", "bio")
    ]
    return Dataset("grouped", train=train, eval=queries)


def test_k_sweep_expands_into_named_conditions() -> None:
    sweep = ICLCondition(name="icl", k=[0, 2, 5], seed=3)
    assert [(c.name, c.k) for c in sweep.expand()] == [("icl.k0", 0), ("icl.k2", 2), ("icl.k5", 5)]
    seeds = ICLCondition(name="s", k=1, seed=[7, 2**31 - 1], label_noise=[0.25])
    assert seeds.expanded_names() == ["s.s7.noise0.25", "s.s2147483647.noise0.25"]
    assert ICLCondition(name="one", k=4).expand()[0].k_value == 4
    with pytest.raises(TypeError, match="expand"):
        _ = sweep.k_value
    for bad, words in (([1, 1], "same value twice"), ([300], "between 0 and 256"), ([], "1 to 32")):
        with pytest.raises(ValueError, match=words):
            ICLCondition(name="bad", k=bad)


def test_fixed_per_group_uses_one_same_subject_set_in_shuffled_orders() -> None:
    d = _grouped()
    cond = ICLCondition(name="fixed", k=3, selection="fixed_per_group", seed=1)
    prompts = build_prompts(d, cond, PromptSpec())
    for p in prompts:
        subject = d.eval[p.item].labels["subject"]
        assert all(d.train[j].labels["subject"] == subject for j in p.demos)
    sets = {d.eval[p.item].labels["subject"]: set() for p in prompts}
    for p in prompts:
        sets[d.eval[p.item].labels["subject"]].add(frozenset(p.demos))
    assert all(len(s) == 1 for s in sets.values())  # the same set for a whole subject
    geo_orders = {p.demos for p in prompts if d.eval[p.item].labels["subject"] == "geo"}
    assert len(geo_orders) > 1  # ... shown in a per-query order


def test_fixed_per_group_errors_name_the_group_and_the_label() -> None:
    d = _grouped()
    with pytest.raises(SpecError, match="needs k=7 training items with subject='geo'"):
        build_prompts(d, ICLCondition(name="f", k=7, selection="fixed_per_group"), PromptSpec())
    with pytest.raises(SpecError, match="groups demonstrations by 'topic'"):
        cond = ICLCondition(name="f", k=1, selection="fixed_per_group", group_by="topic")
        build_prompts(d, cond, PromptSpec())


def test_similar_selection_picks_the_closest_inputs_closest_last() -> None:
    texts = ["red apples are sweet", "the stock market fell today", "green apples are sour",
             "stocks rose on monday"]  # fmt: skip
    train = [Example(t, "x") for t in texts]
    queries = [Example("are apples sweet or sour", "y"), Example("the market and stocks", "n")]
    d = Dataset("sim", train=train, eval=queries)
    prompts = build_prompts(d, ICLCondition(name="s", k=2, selection="similar"), PromptSpec())
    assert set(prompts[0].demos) == {0, 2} and set(prompts[1].demos) == {1, 3}
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit([t.input for t in train])
    sims = (vec.transform([d.eval[0].input]) @ vec.transform([t.input for t in train]).T).toarray()[
        0
    ]
    assert sims[prompts[0].demos[-1]] >= sims[prompts[0].demos[0]]


def test_fixed_selection_shows_one_seeded_set_to_every_query() -> None:
    from reprlab.worker.prompts import fixed_demos

    d = _grouped()
    prompts = build_prompts(d, ICLCondition(name="f", k=3, selection="fixed", seed=2), PromptSpec())
    assert len({p.demos for p in prompts}) == 1 and len(set(prompts[0].demos)) == 3
    assert prompts[0].demos == fixed_demos(d, 3, 2) != fixed_demos(d, 3, 3)
    with pytest.raises(SpecError, match="training pool has 12 items"):
        fixed_demos(d, 13, 0)


def test_training_texts_are_zero_shot_prompts_and_delimited_outputs() -> None:
    from reprlab.worker.prompts import training_texts

    d = _mcq()
    pairs = training_texts(d, [1, 0], PromptSpec())
    zero_shot = ICLCondition(name="z", k=0)
    as_query = Dataset("q", train=d.train, eval=[d.train[1], d.train[0]], template=d.template,
                       target_delimiter=d.target_delimiter)  # fmt: skip
    assert [p for p, _ in pairs] == [
        p.text for p in build_prompts(as_query, zero_shot, PromptSpec())
    ]
    assert [c for _, c in pairs] == [d.target_delimiter + d.train[j].output for j in (1, 0)]
    # A "\n" delimiter: the prompt ends with it, the continuation is the bare output.
    plain = training_texts(_plain(), [0, 2], PromptSpec())
    assert plain == [("t0\n", "L0"), ("t2\n", "L2")]
    for (prompt, cont), j in zip(pairs, (1, 0), strict=True):  # header + input + " " + output
        assert prompt.endswith(d.train[j].input) and cont == " " + d.train[j].output


# --- study 3: item spans follow the query into the prompt -------------------------------------


def _spanned() -> Dataset:
    def item(i: int) -> Example:
        text = f"Ann is in Rome {i}. Bo is in Oslo {i}.\nWhere is Ann?"
        return Example(text, "Rome", {"subject": "geo"},
                       {"relevant": (0, text.index(".") + 1), "irrelevant": (text.index("Bo"),
                                                                text.index("\n"))})  # fmt: skip

    return Dataset("spanned", train=[item(i) for i in range(4)], eval=[item(10), item(11)])


@pytest.mark.parametrize(
    ("k", "prompt"),
    [(0, {}), (2, {}), (3, {"instruction": "Read.", "demo_separator": "\n"}),
     (2, {"template": "mcq", "target_delimiter": " => "})],
)  # fmt: skip
def test_query_spans_map_onto_the_same_text_in_the_prompt(k: int, prompt: dict) -> None:
    d = _spanned()
    for p in _build(d, k, seed=1, **prompt):
        query = d.eval[p.item]
        assert set(p.spans) == {"relevant", "irrelevant"}
        for name, (start, end) in query.spans.items():
            assert p.text[slice(*p.spans[name])] == query.input[start:end]
        # The mapped span points into the query, not into a demonstration with the same text.
        suffix = prompt.get("target_delimiter", "\n").rstrip(" ")
        assert p.spans["relevant"][0] == len(p.text) - len(suffix) - len(query.input)
    assert _build(_plain(), 2)[0].spans == {}  # items without spans give prompts without spans


@pytest.mark.parametrize("name", ["linear_regression", "reading_comprehension"])
def test_builtin_study3_spans_survive_demonstrations(name: str) -> None:
    d = load_dataset(BuiltinDataset(name=name, n_eval=30, n_train=30, seed=2))
    zero = build_prompts(d, ICLCondition(name="z", k=0), PromptSpec())
    five = build_prompts(d, ICLCondition(name="f", k=5, seed=4), PromptSpec())
    for p0, p5 in zip(zero, five, strict=True):
        query = d.eval[p0.item]
        assert p0.spans == query.spans  # zero-shot: the prompt is the query
        for span, (start, end) in query.spans.items():
            assert p5.text[slice(*p5.spans[span])] == query.input[start:end]
            assert p5.spans[span][0] > start  # shifted past the demonstrations


# --- issue 13: the answer position, one rule for every template --------------------------------


def test_janapati_ji_format_is_byte_exact() -> None:
    """Study 1's run_icl_exp.generate_prompts: each demo `combined + "\n\n"` (combined =
    input + "\n" + output), then the query `input + "\n"`."""
    sst = "it 's a charming and often affecting journey . \nQuestion: Was that sentence positive or negative? Answer:"  # noqa: E501
    train = [Example(f"demo {i} \nQuestion: Was that sentence positive or negative? Answer:",
                     "positive" if i % 2 else "negative") for i in range(6)]  # fmt: skip
    d = Dataset("sst2", train=train, eval=[Example(sst, "positive")])
    (p,) = build_prompts(d, ICLCondition(name="icl", k=2, seed=0), PromptSpec())
    a, b = p.demos
    combined = [train[j].input + "\n" + train[j].output for j in (a, b)]
    assert p.text == combined[0] + "\n\n" + combined[1] + "\n\n" + sst + "\n"
    assert p.text.endswith("negative? Answer:\n")  # read at the "\n" after "Answer:"


def test_doimo_format_is_byte_exact_and_ends_at_answer_colon() -> None:
    d = _mcq(n_train=2)
    (p, _) = _build(d, 2, seed=0)
    header = "The following are multiple choice questions (with answers) about elementary arithmetic.\n\n"  # noqa: E501
    demos = "".join(f"{d.train[j].input} {d.train[j].output}\n\n" for j in p.demos)
    assert p.text == header + demos + "Query?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"


@pytest.mark.parametrize(
    ("delimiter", "suffix", "ends", "continuation"),
    [("\n", None, "q0\n", "y"), (" ", None, "q0", " y"), (" => ", None, "q0 =>", " y"),
     ("\nAnswer: ", "\n", "q0\n", "Answer: y"), ("\n", "", "q0", "\ny")],
)  # fmt: skip
def test_prompt_plus_continuation_is_input_delimiter_output(
    delimiter: str, suffix: str | None, ends: str, continuation: str
) -> None:
    from reprlab.worker.prompts import prompt_format

    spec = PromptSpec(target_delimiter=delimiter, query_suffix=suffix)
    (p, _) = build_prompts(_plain(), ICLCondition(name="z", k=0), spec)
    fmt = prompt_format(_plain(), spec)
    assert p.text == ends and fmt.continuation("y") == continuation
    assert p.text + fmt.continuation("y") == "q0" + delimiter + "y"


def test_a_query_suffix_that_does_not_begin_the_delimiter_is_refused() -> None:
    from pydantic import ValidationError

    from reprlab.worker.prompts import prompt_format

    with pytest.raises(ValidationError, match="must be the start of prompt.target_delimiter"):
        PromptSpec(target_delimiter="\n", query_suffix=" ")
    with pytest.raises(SpecError, match="not the start of the target delimiter"):
        prompt_format(_mcq(), PromptSpec(query_suffix="\n"))  # the mcq delimiter is " "
