"""Fine-tuning on the tiny model: losses fall, checkpoints reload exactly, training resumes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load

from reprlab.schemas import ModelRef, SFTCondition
from reprlab.worker.finetune import (
    IGNORE,
    Trainee,
    TrainingData,
    batch_indices,
    checkpoint_metadata,
    lr_factor,
    make_trainee,
    tokenize_training,
    total_steps,
    train,
)
from reprlab.worker.models import load_model, resolve_model

PAIRS = [
    (f"Review: the {w} was {adj}.", "\n" + ("positive" if good else "negative"))
    for w in ("soup", "room", "film", "staff", "kettle", "tent")
    for adj, good in (("superb", True), ("awful", False), ("great", True), ("dreadful", False))
]


def _trainee(model_dir: Path, **recipe: object) -> Trainee:
    ref = ModelRef(name=str(model_dir), device="cpu")
    resolved = resolve_model(ref, cache_dir=model_dir.parent, allowed_roots=[model_dir.parent])
    cond = SFTCondition.model_validate({"paradigm": "sft", "name": "t", **recipe})
    return make_trainee(load_model(resolved, ref), cond, for_training=True)


def _data(trainee: Trainee) -> TrainingData:
    return tokenize_training(trainee.loaded.tokenizer, PAIRS, loss="answer", max_length=64)


def _train_all(trainee: Trainee, data: TrainingData, total: int) -> None:
    train(trainee, data, start=0, total=total, save_at=lambda s: False, on_save=lambda s: None)


def _logits(trainee: Trainee) -> torch.Tensor:
    ids = trainee.loaded.tokenizer(["Review: the soup was great."], return_tensors="pt")
    with torch.no_grad():
        return trainee.model(**ids).logits


def test_sft_defaults_are_study_one() -> None:
    cond = SFTCondition(paradigm="sft", name="sft")
    assert (cond.method, cond.lora.r, cond.lora.alpha, cond.lora.dropout) == ("lora", 64, 16, 0.1)
    assert cond.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (cond.learning_rate, cond.schedule, cond.warmup_ratio, cond.batch_size) == (
        1e-4, "linear", 0.1, 16,
    )  # fmt: skip
    assert cond.loss == "answer" and cond.optimizer == "adamw"


def test_answer_loss_masks_the_prompt_and_full_loss_does_not(tiny: object) -> None:
    _, tokenizer = tiny  # type: ignore[misc]
    answer = tokenize_training(tokenizer, PAIRS[:3], loss="answer", max_length=64)
    full = tokenize_training(tokenizer, PAIRS[:3], loss="full", max_length=64)
    for ids, labels, prompt in zip(answer.input_ids, answer.labels, PAIRS, strict=False):
        n_prompt = len(tokenizer(prompt[0])["input_ids"])
        assert labels[:n_prompt] == [IGNORE] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:] and len(ids) > n_prompt
    assert full.labels == full.input_ids


def test_too_long_training_text_is_a_spec_error(tiny: object) -> None:
    _, tokenizer = tiny  # type: ignore[misc]
    from reprlab.worker.errors import SpecError

    with pytest.raises(SpecError, match="max_length=8"):
        tokenize_training(tokenizer, PAIRS[:1], loss="answer", max_length=8)


def test_batches_visit_every_item_once_per_epoch_in_a_seeded_order() -> None:
    n, bs = 23, 5
    per_epoch = math.ceil(n / bs)
    epoch0 = [i for s in range(per_epoch) for i in batch_indices(n, bs, 3, s)]
    epoch1 = [i for s in range(per_epoch, 2 * per_epoch) for i in batch_indices(n, bs, 3, s)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(n))
    assert epoch0 != epoch1 and batch_indices(n, bs, 3, 0) != batch_indices(n, bs, 4, 0)
    assert total_steps(n, SFTCondition(paradigm="sft", name="x", batch_size=5, epochs=3)) == 15
    assert total_steps(n, SFTCondition(paradigm="sft", name="x", steps=7)) == 7


def test_learning_rate_warms_up_then_follows_the_schedule() -> None:
    assert [lr_factor(s, 10, 2, "linear") for s in (0, 1)] == [1 / 3, 2 / 3]
    assert lr_factor(2, 10, 2, "linear") == 1.0 and lr_factor(9, 10, 2, "linear") == 0.125
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(9, 10, 2, "constant") == 1.0


@pytest.mark.parametrize("method", ["lora", "full"])
def test_training_lowers_the_loss(tiny_model_dir: Path, method: str) -> None:
    lr = 3e-2 if method == "lora" else 3e-3
    trainee = _trainee(tiny_model_dir, method=method, learning_rate=lr, batch_size=8,
                       lora={"r": 8, "alpha": 16, "dropout": 0.0}, warmup_ratio=0.0)  # fmt: skip
    _train_all(trainee, _data(trainee), 24)
    losses = trainee.losses
    assert len(losses) == 24 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    # The tiny model's frozen final norm and LM head bound how far LoRA can move its logits
    # (the loss cannot fall much below ~5.2 = ln(600) - max logit), full tuning has no bound.
    assert (last < first - 0.4) if method == "lora" else (last < 0.7 * first), losses


def test_lora_touches_only_adapters_and_full_touches_everything(tiny_model_dir: Path) -> None:
    lora = _trainee(tiny_model_dir, lora={"r": 4})
    names = list(lora.trainable())
    assert names and all("lora_" in n for n in names)
    assert all(any(m in n for m in ("q_proj", "k_proj", "v_proj", "o_proj")) for n in names)
    full = _trainee(tiny_model_dir, method="full")
    assert len(full.trainable()) == len(list(full.model.parameters()))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_checkpoint_reloads_to_identical_outputs(tiny_model_dir: Path, method: str) -> None:
    trainee = _trainee(tiny_model_dir, method=method, learning_rate=1e-2, batch_size=8)
    _train_all(trainee, _data(trainee), 6)
    blob = trainee.checkpoint_bytes(6, {"recipe": "test"})
    meta = checkpoint_metadata(blob)
    assert meta["step"] == "6" and meta["method"] == method and len(eval(meta["losses"])) == 6
    fresh = _trainee(tiny_model_dir, method=method)
    fresh.optimizer = None
    before = _logits(fresh)
    fresh.load_trainable(st_load(blob))
    assert torch.equal(_logits(fresh), _logits(trainee))
    assert not torch.equal(before, _logits(trainee))


def test_lora_checkpoint_loads_with_plain_peft(tiny_model_dir: Path) -> None:
    import json

    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    trainee = _trainee(tiny_model_dir, learning_rate=1e-2, lora={"r": 4})
    _train_all(trainee, _data(trainee), 4)
    blob = trainee.checkpoint_bytes(4, {})
    config = json.loads(checkpoint_metadata(blob)["peft_config"])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    fields = {"r", "lora_alpha", "lora_dropout", "target_modules", "task_type", "bias"}
    model = get_peft_model(base, LoraConfig(**{k: v for k, v in config.items() if k in fields}))
    set_peft_model_state_dict(model, st_load(blob))
    model.eval()
    ids = trainee.loaded.tokenizer(["Review: the soup was great."], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, _logits(trainee), atol=1e-6)


def test_resumed_training_matches_an_uninterrupted_run(tiny_model_dir: Path) -> None:
    recipe = {"learning_rate": 1e-2, "batch_size": 5, "lora": {"r": 4}}
    straight = _trainee(tiny_model_dir, **recipe)
    data = _data(straight)
    _train_all(straight, data, 10)

    first = _trainee(tiny_model_dir, **recipe)
    saved: dict[int, bytes] = {}
    train(first, data, start=0, total=10, save_at=lambda s: s == 4,
          on_save=lambda s: saved.__setitem__(s, first.state_bytes(s)))  # fmt: skip
    second = _trainee(tiny_model_dir, **recipe)
    assert second.load_state(saved[4]) == 4
    _train_all_from(second, data, 4, 10)
    assert second.losses == straight.losses
    for name, tensor in straight.trainable().items():
        assert torch.allclose(second.trainable()[name], tensor, atol=1e-7), name


def _train_all_from(trainee: Trainee, data: TrainingData, start: int, total: int) -> None:
    train(trainee, data, start=start, total=total, save_at=lambda s: False, on_save=lambda s: None)
