"""Built-in generators, inline and JSONL datasets."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from reprlab.schemas.jsonl import parse_jsonl
from reprlab.schemas.specs import (
    BuiltinDataset,
    ICLCondition,
    InlineDataset,
    Item,
    JsonlDataset,
    PromptSpec,
)
from reprlab.worker.data import Example, load_dataset
from reprlab.worker.data import mcq as mcq_module
from reprlab.worker.data import sentiment as sentiment_module
from reprlab.worker.data.base import Draws, generate_distinct
from reprlab.worker.errors import DataError, SpecError
from reprlab.worker.prompts import build_prompts


@pytest.mark.parametrize("name", ["sentiment", "mcq"])
def test_builtin_sizes_distinct_disjoint_and_deterministic(name: str) -> None:
    spec = BuiltinDataset(name=name, n_eval=12_000, n_train=8_000, seed=3)
    a, b = load_dataset(spec), load_dataset(spec)
    assert len(a.eval) == 12_000 and len(a.train) == 8_000
    inputs = [e.input for e in a.eval + a.train]
    assert len(set(inputs)) == len(inputs)  # every item distinct, train and eval disjoint
    assert a == b
    other = load_dataset(spec.model_copy(update={"seed": 4}))
    assert [e.input for e in other.eval[:50]] != [e.input for e in a.eval[:50]]


def test_queries_do_not_change_when_only_the_pool_size_changes() -> None:
    small = load_dataset(BuiltinDataset(name="sentiment", n_eval=100, n_train=10))
    large = load_dataset(BuiltinDataset(name="sentiment", n_eval=100, n_train=500))
    assert small.eval == large.eval


def test_sentiment_is_balanced_labelled_and_lexically_rich() -> None:
    d = load_dataset(BuiltinDataset(name="sentiment", n_eval=300, n_train=0))
    assert Counter(e.output for e in d.eval) == {"positive": 150, "negative": 150}
    assert all(e.labels == {"sentiment": e.output} for e in d.eval)
    assert d.template == "plain" and d.target_delimiter == "\n"
    assert d.options == ["negative", "positive"]
    # Every prompt ends in the same token (the "\n" of the answer position), so the states
    # differ only through the reviews: these need a large vocabulary, many structures and
    # lengths, not one varied slot (the grammar before had 357 words, 8-29 words a review).
    words = Counter(w for e in d.eval for w in re.findall(r"[a-z'-]+", e.input.lower()))
    assert len(words) >= 600
    lengths = [len(e.input.split()) for e in d.eval]
    assert min(lengths) <= 6 and max(lengths) >= 35 and len(set(lengths)) >= 30
    sentences = [re.split(r"(?<=[.!?]) ", e.input) for e in d.eval]
    assert {len(s) for s in sentences} >= {1, 2, 3, 4, 5}
    assert len({" ".join(e.input.split()[:3]) for e in d.eval}) >= 150  # varied openings
    things = {t for k in sentiment_module.KINDS for t in k.things}
    assert len({t for e in d.eval for t in things if f" {t}" in e.input}) >= 80
    # Natural text: filled slots, capitalised sentences with end punctuation, single spaces.
    for parts in sentences:
        assert all(p[:1].isupper() or p[:1].isdigit() for p in parts), parts
        assert all(p[-1] in ".!?" for p in parts), parts
    assert not any("{" in e.input or "  " in e.input or e.input != e.input.strip()
                   for e in d.eval)  # fmt: skip


def test_sentiment_reviews_use_their_own_polarity_and_kind() -> None:
    d = load_dataset(BuiltinDataset(name="sentiment", n_eval=2000, n_train=0, seed=2))
    kinds = sentiment_module.KINDS
    fixed = {
        polarity: {s for s in sentences if "{" not in s}
        for polarity, sentences in (
            (True, [s for k in kinds for s in k.positive] + list(sentiment_module.VERDICTS_POS)),
            (False, [s for k in kinds for s in k.negative] + list(sentiment_module.VERDICTS_NEG)),
        )
    }
    kind_of = {t: k for k in kinds for t in k.things}
    judged = 0
    for e in d.eval:
        positive = e.output == "positive"
        # A fixed sentence of the other polarity never appears in a review.
        assert not any(s in e.input for s in fixed[not positive]), e.input
        # "The {aspect} of this {thing} is ...": the aspect is one of the thing's kind.
        for aspect, thing in re.findall(r"The ([\w -]+?) of this ([\w -]+?) (?:is|are|was|were) ",
                                        e.input):  # fmt: skip
            assert aspect in kind_of[thing].aspects, e.input
            judged += 1
    assert judged > 200


def test_mcq_is_balanced_over_letters_and_subjects_and_answers_are_right() -> None:
    d = load_dataset(BuiltinDataset(name="mcq", n_eval=1200, n_train=0, seed=1))
    letters = Counter(e.labels["answer"] for e in d.eval)
    assert set(letters) == {"A", "B", "C", "D"} and min(letters.values()) > 240
    subjects = Counter(e.labels["subject"] for e in d.eval)
    assert len(subjects) >= 6 and max(subjects.values()) - min(subjects.values()) <= 1
    checked: Counter[str] = Counter()
    for e in d.eval:
        lines = e.input.split("\n")
        assert lines[-1] == "Answer:" and e.output == e.labels["answer"]
        assert [ln[:3] for ln in lines[1:5]] == ["A. ", "B. ", "C. ", "D. "]
        options = {ln[0]: ln[3:] for ln in lines[1:5]}
        assert len(set(options.values())) == 4
        expected = _recompute_answer(lines[0])
        if expected is not None:
            assert options[e.output] == expected, e.input
            assert list(options.values()).count(expected) == 1
            checked[str(e.labels["subject"])] += 1
    # Every subject's answers were recomputed independently of the generator.
    assert len(checked) == len(mcq_module.SUBJECTS) and min(checked.values()) > 100


def _recompute_answer(question: str) -> str | None:
    """The right option text, computed from the question alone (None: unknown phrasing)."""
    number = r"(\d+)"
    if m := re.fullmatch(rf"What is {number} ([+-]) {number}\?", question):
        return str(int(m[1]) + int(m[3]) if m[2] == "+" else int(m[1]) - int(m[3]))
    if m := re.fullmatch(rf"What is {number} times {number}\?", question):
        return str(int(m[1]) * int(m[2]))
    if m := re.fullmatch(rf"How many (\w+) are there in {number} (\w+)\?", question):
        factors = {("centimetres", "metres"): 100, ("grams", "kilograms"): 1000,
                   ("minutes", "hours"): 60, ("metres", "kilometres"): 1000,
                   ("seconds", "minutes"): 60, ("millilitres", "litres"): 1000,
                   ("hours", "days"): 24, ("days", "weeks"): 7}  # fmt: skip
        return str(int(m[2]) * factors[(m[1], m[3])])
    if m := re.search(r"capital of (\w[\w ]*)\?$|government of (.+) is in which city", question):
        return mcq_module.CAPITALS[m[1] or m[2]]
    if m := re.fullmatch(r"What is the chemical symbol of (\w+)\?", question):
        return mcq_module.ELEMENTS[m[1]]
    if m := re.fullmatch(r"Which element has the chemical symbol (\w+)\?", question):
        return next(name for name, sym in mcq_module.ELEMENTS.items() if sym == m[1])
    if m := re.fullmatch(rf"If today is (\w+), what day of the week will it be in {number} days\?",
                         question):  # fmt: skip
        days = mcq_module.DAYS
        return days[(days.index(m[1]) + int(m[2])) % 7]
    if m := re.fullmatch(rf"A rectangle is {number} cm long and {number} cm wide\. (.*)", question):
        a, b = int(m[1]), int(m[2])
        return str(a * b if "area" in m[3] else 2 * (a + b))
    if m := re.fullmatch(
        rf"What is the remainder when {number} is divided by {number}\?", question
    ):
        return str(int(m[1]) % int(m[2]))
    return None


def test_builtin_refuses_sizes_it_cannot_fill() -> None:
    with pytest.raises(DataError, match="can generate at most 100000 distinct items") as err:
        load_dataset(BuiltinDataset(name="mcq", n_eval=100_000, n_train=100_000))
    assert err.value.hint is not None and "n_eval" in err.value.hint


def test_generator_that_runs_out_of_distinct_items_says_so() -> None:
    def draw(rng: Draws, i: int) -> Example:
        return Example(input=f"item {int(rng.integers(10))}", output="x")

    assert len(generate_distinct("toy", 5, 100, 0, draw)) == 5
    with pytest.raises(DataError, match="at most 50 distinct items; the spec asks for 60"):
        generate_distinct("toy", 60, 100, 0, draw)
    with pytest.raises(DataError, match="could only generate 10 distinct 'toy' items of the 20"):
        generate_distinct("toy", 20, 100, 0, draw)


def _items(n: int) -> list[Item]:
    return [Item(input=f"question {i}", output=str(i % 3), labels={"i": i}) for i in range(n)]


def test_inline_seeded_split_and_explicit_splits() -> None:
    d = load_dataset(InlineDataset(items=_items(30), n_eval=20, n_train=10, seed=1))
    assert len(d.eval) == 20 and len(d.train) == 10
    assert {e.input for e in d.eval}.isdisjoint({e.input for e in d.train})
    assert d.options == ["0", "1", "2"]
    splits = ["eval" if i % 3 else "train" for i in range(30)]
    d = load_dataset(InlineDataset(items=_items(30), splits=splits, n_eval=5, n_train=4))
    assert [e.input for e in d.eval] == ["question 1", "question 2", "question 4", "question 5",
                                         "question 7"]  # fmt: skip
    assert [e.labels["i"] for e in d.train] == [0, 3, 6, 9]


def test_inline_too_few_items_names_the_counts() -> None:
    with pytest.raises(
        DataError, match=r"has 10 items but the spec asks for n_eval=8 \+ n_train=5"
    ):
        load_dataset(InlineDataset(items=_items(10), n_eval=8, n_train=5))


def test_parse_jsonl_fields_labels_splits_and_errors() -> None:
    text = (
        '{"input": "a", "output": "x", "subject": "math", "labels": {"w": 1.5}, "split": "train"}\n'
        "\n"
        '{"input": "b", "output": "y", "split": "eval"}\n'
    )
    items, splits = parse_jsonl(text, source="f.jsonl")
    assert items[0].labels == {"w": 1.5, "subject": "math"} and splits == ["train", "eval"]
    with pytest.raises(ValueError, match=r"f.jsonl, line 2: not valid JSON"):
        parse_jsonl('{"input": "a", "output": "x"}\n{"input": ', source="f.jsonl")
    with pytest.raises(ValueError, match=r"line 1: needs a non-empty string field 'input'"):
        parse_jsonl('{"output": "x"}', source="f.jsonl")
    with pytest.raises(ValueError, match="has no items"):
        parse_jsonl("\n\n", source="f.jsonl")
    with pytest.raises(ValueError, match="some lines have a 'split'"):
        parse_jsonl('{"input": "a", "output": "x", "split": "eval"}\n{"input": "b", "output": "y"}')


def _write(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"input": f"q{i}", "output": "o"}) + "\n" for i in range(n)))
    return path


def test_jsonl_file_under_a_data_root(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.jsonl", 12)
    d = load_dataset(JsonlDataset(path=str(f), n_eval=8, n_train=4), data_roots=[tmp_path])
    assert d.name == "d.jsonl" and len(d.eval) == 8 and len(d.train) == 4


def test_jsonl_paths_outside_the_roots_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = _write(outside / "s.jsonl", 20)
    with pytest.raises(DataError, match="outside the worker's data roots") as err:
        load_dataset(JsonlDataset(path=str(secret)), data_roots=[root])
    assert str(root) in (err.value.hint or "")
    with pytest.raises(DataError, match=r"contains '\.\.'"):
        load_dataset(JsonlDataset(path=f"{root}/../outside/s.jsonl"), data_roots=[root])
    (root / "link.jsonl").symlink_to(secret)
    with pytest.raises(DataError, match="outside"):
        load_dataset(JsonlDataset(path=str(root / "link.jsonl")), data_roots=[root])
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(JsonlDataset(path=str(root / "missing.jsonl")), data_roots=[root])


def test_jsonl_bad_line_and_empty_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl, line 2"):
        load_dataset(JsonlDataset(path=str(bad)), data_roots=[tmp_path])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="has no items"):
        load_dataset(JsonlDataset(path=str(empty)), data_roots=[tmp_path])


def test_draws_follow_numpy_ranges_and_are_seeded() -> None:
    a, b, c = Draws([1, 2]), Draws([1, 2]), Draws([1, 3])
    xs = [a.integers(3, 7) for _ in range(20_000)]  # crosses the buffer boundary twice
    assert xs == [b.integers(3, 7) for _ in range(20_000)]
    assert xs[:50] != [c.integers(3, 7) for _ in range(50)]
    assert Counter(xs).keys() == {3, 4, 5, 6} and min(Counter(xs).values()) > 4500
    assert {a.integers(2) for _ in range(200)} == {0, 1}
    assert {a.pick("xyz") for _ in range(200)} == {"x", "y", "z"}


def test_jsonl_relative_path_labels_and_byte_order_mark(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    lines = [{"input": f"q{i}", "output": "yes" if i % 2 else "no", "topic": f"t{i % 3}"}
             for i in range(10)]  # fmt: skip
    text = "\ufeff" + "\n".join(json.dumps(x) for x in lines) + "\n\n"
    (second / "d.jsonl").write_text(text, encoding="utf-8")
    spec = JsonlDataset(path="d.jsonl", n_eval=6, n_train=4, seed=2)
    d = load_dataset(spec, data_roots=[first, second])  # found under the second root
    assert len(d.eval) == 6 and len(d.train) == 4 and d.options == ["no", "yes"]
    assert d.template == "plain" and d.target_delimiter == "\n"
    by_input = {e.input: e for e in d.eval + d.train}
    assert sorted(by_input) == sorted(x["input"] for x in lines)  # every item, once
    assert by_input["q4"].labels == {"topic": "t1"} and by_input["q4"].output == "no"
    assert load_dataset(spec, data_roots=[first, second]) == d  # seeded
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(JsonlDataset(path="other.jsonl"), data_roots=[first, second])


def test_jsonl_split_field_and_too_few_marked_items(tmp_path: Path) -> None:
    rows = [{"input": f"q{i}", "output": "o", "split": "train" if i < 3 else "eval"}
            for i in range(8)]  # fmt: skip
    f = tmp_path / "s.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = load_dataset(JsonlDataset(path=str(f), n_eval=4, n_train=3), data_roots=[tmp_path])
    assert [e.input for e in d.eval] == ["q3", "q4", "q5", "q6"]
    assert [e.input for e in d.train] == ["q0", "q1", "q2"]
    with pytest.raises(DataError, match="marks 5 items 'eval' and 3 'train'") as err:
        load_dataset(JsonlDataset(path=str(f), n_eval=4, n_train=4), data_roots=[tmp_path])
    assert "n_train" in (err.value.hint or "")


def test_parse_jsonl_rejects_bad_fields_with_line_numbers() -> None:
    ok = '{"input": "a", "output": "x"}\n'
    cases = {
        '{"input": "b", "output": 3}': "line 2: needs a non-empty string field 'output'",
        '{"input": "b", "output": "y", "labels": [1]}': "line 2: 'labels' must be an object",
        '{"input": "b", "output": "y", "extra": [1]}': "line 2: field 'extra' must be a string",
        '{"input": "b", "output": "y", "split": "test"}': "line 2: 'split' must be 'train' or",
        "[1, 2]": "line 2: expected a JSON object, got list",
    }
    for line, problem in cases.items():
        with pytest.raises(ValueError, match=re.escape(f"data.jsonl, {problem}")):
            parse_jsonl(ok + line, source="data.jsonl")
    with pytest.raises(ValueError, match="more than 2 items"):
        parse_jsonl(ok * 3, max_items=2)


def test_negative_seeds_are_refused_by_the_spec_and_by_the_worker() -> None:
    with pytest.raises(ValidationError, match="seed"):
        BuiltinDataset(name="sentiment", seed=-1)
    with pytest.raises(ValidationError, match="seed"):
        ICLCondition(name="neg", seed=-2)
    # A spec built without validation still gets a clear error, not a numpy traceback.
    unchecked = BuiltinDataset.model_construct(
        source="builtin", name="sentiment", n_eval=4, n_train=0, seed=-1
    )
    with pytest.raises(SpecError, match="dataset.seed is -1"):
        load_dataset(unchecked)
    d = load_dataset(BuiltinDataset(name="sentiment", n_eval=4, n_train=4))
    neg = ICLCondition.model_construct(paradigm="icl", name="neg", k=1, selection="random", seed=-2)
    with pytest.raises(SpecError, match="condition 'neg' has seed=-2"):
        build_prompts(d, neg, PromptSpec())


# --- study 3: in-context linear regression and reading comprehension with a distractor --------

STUDY3 = ["linear_regression", "reading_comprehension"]


@pytest.mark.parametrize("name", STUDY3)
def test_study3_builtins_are_distinct_disjoint_deterministic_and_span_marked(name: str) -> None:
    spec = BuiltinDataset(name=name, n_eval=6_000, n_train=4_000, seed=3)
    a, b = load_dataset(spec), load_dataset(spec)
    assert len(a.eval) == 6_000 and len(a.train) == 4_000
    inputs = [e.input for e in a.eval + a.train]
    assert len(set(inputs)) == len(inputs)
    assert a == b
    other = load_dataset(spec.model_copy(update={"seed": 4}))
    assert [e.input for e in other.eval[:50]] != [e.input for e in a.eval[:50]]
    assert a.template == "plain" and a.target_delimiter == " "
    for e in a.eval + a.train:
        assert e.output in a.options  # a closed label set, so accuracy can be scored
        assert e.spans and all(0 <= s < t <= len(e.input) for s, t in e.spans.values())
        # The spans survive the schema (what a user's JSONL of the same items would carry).
        item = Item(input=e.input, output=e.output, labels=dict(e.labels),
                    spans={k: list(v) for k, v in e.spans.items()})  # fmt: skip
        assert item.spans == {k: list(v) for k, v in e.spans.items()}


def test_linear_regression_items_follow_their_line_and_label_it() -> None:
    d = load_dataset(BuiltinDataset(name="linear_regression", n_eval=1200, n_train=0, seed=1))
    line = re.compile(r"x = (\d+), y = (\d+)")
    for e in d.eval:
        w, b, x, y = (e.labels[k] for k in ("weight", "bias", "x", "y"))
        assert all(isinstance(v, int) and not isinstance(v, bool) for v in (w, b, x, y))
        assert e.output == str(y) == str(w * x + b)
        *shown, query = e.input.split("\n")
        assert query == f"x = {x}, y ="
        pairs = [tuple(map(int, line.fullmatch(s).groups())) for s in shown]  # type: ignore[union-attr]
        assert all(py == w * px + b for px, py in pairs)
        assert len({px for px, _ in pairs} | {x}) == len(pairs) + 1  # the query x is new
        start, end = e.spans["relevant"]
        assert e.input[start:end] == "\n".join(shown)
        start, end = e.spans["query"]
        assert e.input[start:end] == str(x) and end == len(e.input) - len(", y =")
        assert "irrelevant" not in e.spans  # every shown pair is evidence
    weights = Counter(e.labels["weight"] for e in d.eval)
    assert 4 <= len(weights) <= 8 and max(weights.values()) - min(weights.values()) <= 1
    assert len({e.labels["bias"] for e in d.eval}) >= 8
    assert len({e.labels["x"] for e in d.eval}) >= 8


def test_reading_comprehension_relevant_and_distractor_sentences() -> None:
    d = load_dataset(BuiltinDataset(name="reading_comprehension", n_eval=1600, n_train=0))
    for e in d.eval:
        labels = e.labels
        assert e.output == labels["answer"] != labels["distractor_answer"]
        assert labels["entity"] != labels["distractor"]
        relevant = e.input[slice(*e.spans["relevant"])]
        irrelevant = e.input[slice(*e.spans["irrelevant"])]
        assert relevant.startswith(str(labels["entity"])) and relevant.endswith(".")
        assert irrelevant.startswith(str(labels["distractor"])) and irrelevant.endswith(".")
        assert str(labels["answer"]) in relevant and str(labels["distractor_answer"]) in irrelevant
        # Same template: the sentences differ only in the person and the value.
        swapped = re.sub(rf"\b{labels['distractor']}\b", str(labels["entity"]), irrelevant)
        swapped = re.sub(rf"\b{labels['distractor_answer']}\b", str(labels["answer"]), swapped)
        assert swapped == relevant
        passage, question, answer_cue = e.input.split("\n")
        assert passage == (f"{relevant} {irrelevant}" if labels["relevant_first"]
                           else f"{irrelevant} {relevant}")  # fmt: skip
        assert str(labels["entity"]) in question and str(labels["distractor"]) not in question
        assert answer_cue == "Answer:"
    attributes = Counter(e.labels["attribute"] for e in d.eval)
    assert len(attributes) >= 6 and max(attributes.values()) - min(attributes.values()) <= 1
    assert Counter(e.labels["relevant_first"] for e in d.eval) == {0: 800, 1: 800}
    assert len({e.labels["entity"] for e in d.eval}) >= 20


@pytest.mark.parametrize(("name", "limit"), [("linear_regression", 151_200),
                                             ("reading_comprehension", 1_047_552),
                                             ("sentiment", 634_200)])  # fmt: skip
def test_builtins_refuse_sizes_they_cannot_fill(name: str, limit: int) -> None:
    from reprlab.worker.data.loading import BUILTINS

    assert BUILTINS[name].capacity // 2 == limit
    if limit < 200_000:  # the schema caps n_eval + n_train at 200 000
        with pytest.raises(DataError, match=f"can generate at most {limit} distinct items"):
            load_dataset(BuiltinDataset(name=name, n_eval=100_000, n_train=limit - 99_999))
    # The generator itself refuses one item more than half its capacity.
    gen = BUILTINS[name]
    with pytest.raises(DataError, match=f"at most {limit} distinct items; the spec asks for"):
        generate_distinct(name, limit + 1, gen.capacity, 0, gen.draw)


def test_item_spans_are_validated_and_carried_by_jsonl_and_inline_items(tmp_path: Path) -> None:
    Item(input="abc", output="x", spans={"relevant": [0, 3]})
    for bad, words in (([0, 4], "len\\(input\\) = 3"), ([2, 2], "start < end"),
                       ([-1, 2], "0 <= start"), ([1], "must be \\[start, end\\]")):  # fmt: skip
        with pytest.raises(ValidationError, match=words):
            Item(input="abc", output="x", spans={"relevant": bad})
    rows = [{"input": f"Q{i}: context here", "output": "o", "spans": {"relevant": [4, 11]}}
            for i in range(6)]  # fmt: skip
    f = tmp_path / "s.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = load_dataset(JsonlDataset(path=str(f), n_eval=4, n_train=2), data_roots=[tmp_path])
    assert all(e.spans == {"relevant": (4, 11)} for e in d.eval + d.train)
    assert all(e.input[4:11] == "context" and e.labels == {} for e in d.eval)
    inline = InlineDataset(items=[Item(input="ab", output="o", spans={"q": [1, 2]})] * 2,
                           n_eval=1, n_train=1)  # fmt: skip
    assert load_dataset(inline).eval[0].spans == {"q": (1, 2)}
    with pytest.raises(ValueError, match=r"f.jsonl, line 1: spans: .*len\(input\) = 2"):
        parse_jsonl('{"input": "ab", "output": "o", "spans": {"r": [0, 3]}}', source="f.jsonl")
