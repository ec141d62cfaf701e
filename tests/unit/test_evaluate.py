"""Behavioural accuracy: log-likelihood scoring against a hand-computed example."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from reprlab.schemas import JobSpec
from reprlab.server.storage import ArtifactStore
from reprlab.worker.errors import JobCancelled, SpecError
from reprlab.worker.evaluate import score_options
from reprlab.worker.pipeline import NullReporter, run_pipeline


def _by_hand(model: torch.nn.Module, tok: object, context: str, continuation: str) -> float:
    """Sum of log p(continuation token | everything before), one unpadded forward, no batching."""
    ctx = tok(context)["input_ids"]  # type: ignore[operator]
    whole = tok(context + continuation)["input_ids"]  # type: ignore[operator]
    assert whole[: len(ctx)] == ctx
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    return sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx), len(whole)))


def test_scores_equal_a_hand_computed_log_likelihood(tiny: tuple[torch.nn.Module, object]) -> None:
    model, tok = tiny
    prompts = ["great movie, loved it", "What is 3 + 4?\nA. 7\nB. 8\nAnswer:", "x"]
    options = ["negative", "positive", "7"]
    gold = [1, 2, 0]
    scores = score_options(model, tok, prompts, gold, options, "\n", batch_size=4)
    expected = [[_by_hand(model, tok, p, "\n" + o) for o in options] for p in prompts]
    for got_row, want_row in zip(scores.loglik, expected, strict=True):
        for got, want in zip(got_row, want_row, strict=True):
            assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-4)
    choices = [max(range(3), key=lambda j: row[j]) for row in expected]
    assert scores.choices == choices
    assert scores.accuracy == pytest.approx(
        sum(c == g for c, g in zip(choices, gold, strict=True)) / 3
    )
    lengths = [len(o.encode()) for o in options]
    norm = [max(range(3), key=lambda j: row[j] / lengths[j]) for row in expected]
    assert scores.accuracy_norm == pytest.approx(
        sum(c == g for c, g in zip(norm, gold, strict=True)) / 3
    )
    hits = 0
    for p, g in zip(prompts, gold, strict=True):
        # The first answer token comes after the delimiter's own tokens.
        ctx = tok(p + "\n")["input_ids"]  # type: ignore[operator]
        whole = tok(p + "\n" + options[g])["input_ids"]  # type: ignore[operator]
        assert whole[: len(ctx)] == ctx
        with torch.no_grad():
            logits = model(torch.tensor([whole])).logits[0]
        hits += int(logits[len(ctx) - 1].argmax()) == whole[len(ctx)]
    assert scores.first_token_accuracy == pytest.approx(hits / 3) and scores.n_items == 3


def test_batching_does_not_change_scores(tiny: tuple[torch.nn.Module, object]) -> None:
    model, tok = tiny
    prompts = [
        f"review number {i} was {'good' if i % 2 else 'bad'}" * (1 + i % 3) for i in range(7)
    ]
    gold = [i % 2 for i in range(7)]
    one = score_options(model, tok, prompts, gold, ["bad", "good"], " ", batch_size=1)
    many = score_options(model, tok, prompts, gold, ["bad", "good"], " ", batch_size=5)
    for a, b in zip(one.loglik, many.loglik, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_bad_inputs_and_cancellation(tiny: tuple[torch.nn.Module, object]) -> None:
    model, tok = tiny
    with pytest.raises(SpecError, match="closed set"):
        score_options(model, tok, ["a"], [0], [], "\n")
    with pytest.raises(SpecError, match="one of the dataset's options"):
        score_options(model, tok, ["a"], [3], ["x", "y"], "\n")
    with pytest.raises(JobCancelled):
        score_options(model, tok, ["a", "b"], [0, 1], ["x", "y"], "\n", should_stop=lambda: True)


def test_pipeline_reports_accuracy_and_reuses_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = JobSpec.model_validate({
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "dataset": {"name": "sentiment", "n_eval": 40, "n_train": 10},
        "conditions": [{"name": "zs", "k": 0}, {"name": "icl-2", "k": 2}],
        "metrics": [{"name": "id_twonn"}],
        "accuracy": True,
    })  # fmt: skip
    store = ArtifactStore(str(tmp_path / "store"))

    def run() -> tuple[list[object], dict[str, str]]:
        reporter = NullReporter()
        out = run_pipeline(spec, store=store, model_cache=tmp_path, reporter=reporter,
                           model_roots=[tiny_model_dir.parent])  # fmt: skip
        return [c.behaviour for c in out.results.conditions], {
            s.name: s.outcome for s in reporter.stages
        }

    first, stages = run()
    assert stages["accuracy:zs"] == "done" and stages["accuracy:icl-2"] == "done"
    for b in first:
        assert b is not None and b.n_items == 40 and b.options == ["negative", "positive"]  # type: ignore[attr-defined]
        assert 0.0 <= b.accuracy <= 1.0 and len(b.choices) == 40  # type: ignore[attr-defined]
    again, stages = run()
    assert stages["accuracy:zs"] == "cached" and "load-model" not in stages
    assert again == first


def _joint_by_hand(model: torch.nn.Module, tok: object, prompt: str, conts: list[str]) -> list:
    """Scores on the joint tokenisation: every option's tokens past the common prefix that the
    prompt's own tokens share with all of them."""
    ctx = tok(prompt)["input_ids"]  # type: ignore[operator]
    wholes = [tok(prompt + c)["input_ids"] for c in conts]  # type: ignore[operator]

    def common(a: list, b: list) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    cut = min(common(ctx, w) for w in wholes)
    out = []
    for whole in wholes:
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
        out.append(sum(float(logp[t - 1, whole[t]]) for t in range(cut, len(whole))))
    return out


def test_a_prompt_whose_end_merges_with_the_answer_is_scored_on_the_joint_tokens(
    tiny: tuple[torch.nn.Module, object],
) -> None:
    model, tok = tiny
    prompt, options = "a great posi", ["tive", "xq"]
    ctx = tok(prompt)["input_ids"]  # type: ignore[operator]
    whole = tok(prompt + "tive")["input_ids"]  # type: ignore[operator]
    assert whole[: len(ctx)] != ctx  # "posi" + "tive" merge: the case under test
    scores = score_options(model, tok, [prompt, "plain text"], [0, 1], options, "")
    assert scores.boundary_merges == 1
    for got, want in zip(
        scores.loglik[0], _joint_by_hand(model, tok, prompt, options), strict=True
    ):
        assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-4)
