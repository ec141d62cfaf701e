"""Supervised fine-tuning: LoRA (peft) or full, resumable, with content-keyed checkpoints.

The training loop is deterministic given the recipe: the batch of step s comes from a
permutation seeded by (seed, epoch), and the dropout RNG is reseeded from (seed, s) before every
step. So a run resumed from a saved state at step s takes exactly the steps an uninterrupted run
takes, which is what makes a checkpoint's content key (recipe + step) honest.

Checkpoints are safetensors: for LoRA the peft adapter state dict (peft's key names; the
`LoraConfig` is in the metadata, so `peft.set_peft_model_state_dict` loads it), for full
fine-tuning every parameter of the model. The resumable training state adds the optimiser and
schedule state and is kept only for the latest saved step.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from reprlab.schemas.specs import SFTCondition
from reprlab.worker.errors import JobCancelled, SpecError
from reprlab.worker.evaluate import split_continuation
from reprlab.worker.models import LoadedModel

# Part of every adapter's content key: bump it when the training loop changes what it computes.
TRAINING_VERSION = "2"
IGNORE = -100


@dataclass(frozen=True)
class TrainingData:
    """Tokenised training texts and their labels (IGNORE where no loss is taken)."""

    input_ids: list[list[int]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_training(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], *, loss: str, max_length: int
) -> TrainingData:
    """Token ids of each prompt + continuation; labels on the continuation only for 'answer'.

    Raises:
        SpecError: a text is longer than `max_length` tokens, or there is nothing to train on.
    """
    if not pairs:
        raise SpecError("the training set is empty", hint="raise dataset.n_train")
    ids_all, labels_all = [], []
    for i, (prompt, continuation) in enumerate(pairs):
        ctx, cont = split_continuation(tokenizer, prompt, continuation)
        ids = ctx + cont
        if len(ids) > max_length:
            raise SpecError(
                f"training text {i} has {len(ids)} tokens, more than max_length={max_length}",
                hint="raise the condition's max_length",
            )
        labels = list(ids) if loss == "full" else [IGNORE] * len(ctx) + list(cont)
        ids_all.append(ids)
        labels_all.append(labels)
    return TrainingData(ids_all, labels_all)


def total_steps(n_items: int, recipe: SFTCondition) -> int:
    """Optimiser steps of a recipe: `steps`, else epochs x ceil(items / batch size)."""
    if recipe.steps is not None:
        return recipe.steps
    return recipe.epochs * math.ceil(n_items / recipe.batch_size)


def batch_indices(n_items: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The training items of optimiser step `step` (0-based): seeded epochs, last batch short."""
    per_epoch = math.ceil(n_items / batch_size)
    epoch, b = divmod(step, per_epoch)
    order = np.random.default_rng([seed, 104_729, epoch]).permutation(n_items)
    return [int(i) for i in order[b * batch_size : (b + 1) * batch_size]]


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at `step`: linear warm-up, then the schedule."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


@dataclass
class Trainee:
    """A model being (or that was) fine-tuned: a private copy, never the shared base model."""

    loaded: LoadedModel
    recipe: SFTCondition
    optimizer: torch.optim.Optimizer | None = None
    losses: list[float] = field(default_factory=list)

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    def trainable(self) -> dict[str, Tensor]:
        """The weights training changes (what a checkpoint stores)."""
        if self.recipe.method == "lora":
            from peft import get_peft_model_state_dict

            state: dict[str, Tensor] = get_peft_model_state_dict(self.model)
            return {k: v.detach().contiguous() for k, v in state.items()}
        return {n: p.detach().contiguous() for n, p in self.model.named_parameters()}

    def load_trainable(self, state: dict[str, Tensor]) -> None:
        """Set the trained weights from a checkpoint."""
        if self.recipe.method == "lora":
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self.model, state)
            unexpected = list(getattr(result, "unexpected_keys", []))
        else:
            result = self.model.load_state_dict(state, strict=False)
            unexpected = list(result.unexpected_keys)
        if unexpected:
            raise SpecError(
                f"checkpoint does not fit the model: unexpected weights {unexpected[:3]}"
            )

    def checkpoint_bytes(self, step: int, meta: dict[str, str]) -> bytes:
        """A checkpoint (adapter or full weights) as safetensors, with its recipe in metadata."""
        info = {
            **meta,
            "step": str(step),
            "method": self.recipe.method,
            "losses": json.dumps(self.losses[:step]),
        }
        if self.recipe.method == "lora":
            peft_model: Any = self.model
            config = peft_model.peft_config["default"].to_dict()
            info["peft_config"] = json.dumps(config, default=list)
        return st_save(self.trainable(), metadata=info)

    def state_bytes(self, step: int) -> bytes:
        """The resumable state: trained weights, optimiser state, losses so far."""
        if self.optimizer is None:
            raise RuntimeError("no optimiser: this trainee was built for analysis only")
        tensors = {f"w.{k}": v for k, v in self.trainable().items()}
        opt = self.optimizer.state_dict()
        for idx, slots in opt["state"].items():
            for slot, value in slots.items():
                if isinstance(value, Tensor):
                    tensors[f"opt.{idx}.{slot}"] = value.detach().contiguous()
        meta = {
            "step": str(step),
            "param_groups": json.dumps(opt["param_groups"]),
            "losses": json.dumps(self.losses[:step]),
        }
        return st_save(tensors, metadata=meta)

    def load_state(self, data: bytes) -> int:
        """Restore a resumable state; returns its step."""
        if self.optimizer is None:
            raise RuntimeError("no optimiser: this trainee was built for analysis only")
        tensors = st_load(data)
        meta = _metadata(data)
        self.load_trainable({k[2:]: v for k, v in tensors.items() if k.startswith("w.")})
        state: dict[int, dict[str, Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, slot = key.split(".", 2)
                state.setdefault(int(idx), {})[slot] = value
        self.optimizer.load_state_dict(
            {"state": state, "param_groups": json.loads(meta["param_groups"])}
        )
        self.losses = json.loads(meta["losses"])
        return int(meta["step"])


def _metadata(data: bytes | BinaryIO) -> dict[str, str]:
    """The `__metadata__` of safetensors bytes or of an open file (only the header is read)."""
    if isinstance(data, bytes):
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
    else:
        n = int.from_bytes(data.read(8), "little")
        header = json.loads(data.read(n))
    meta: dict[str, str] = header.get("__metadata__", {})
    return meta


def checkpoint_metadata(data: bytes | BinaryIO) -> dict[str, str]:
    """Metadata of a stored checkpoint (step, method, losses, peft_config)."""
    return _metadata(data)


def make_trainee(loaded: LoadedModel, recipe: SFTCondition, *, for_training: bool) -> Trainee:
    """Wrap a private model copy for `recipe`: LoRA adapters (seeded init) or all weights."""
    model: Any = loaded.model
    torch.manual_seed(recipe.seed_value)
    if recipe.method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = recipe.lora.target_modules
        config = LoraConfig(
            r=recipe.lora.r,
            lora_alpha=recipe.lora.alpha,
            lora_dropout=recipe.lora.dropout,
            target_modules=targets if isinstance(targets, str) else list(targets),
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            with warnings.catch_warnings():
                # peft 0.21 calls a transformers 5 method that warns it was renamed.
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
                model = get_peft_model(model, config)
        except ValueError as exc:
            raise SpecError(
                f"LoRA target_modules {targets!r} do not fit this model: {exc}",
                hint="name modules of the model, e.g. q_proj, k_proj, v_proj, o_proj",
            ) from None
    trainee = Trainee(
        loaded=LoadedModel(model=model, tokenizer=loaded.tokenizer, info=loaded.info),
        recipe=recipe,
    )
    if for_training:
        params = [p for p in model.parameters() if p.requires_grad]
        if recipe.optimizer == "adamw":
            trainee.optimizer = torch.optim.AdamW(
                params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay
            )
        else:
            trainee.optimizer = torch.optim.SGD(
                params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay
            )
    model.eval()
    return trainee


def train(
    trainee: Trainee,
    data: TrainingData,
    *,
    start: int,
    total: int,
    save_at: Callable[[int], bool],
    on_save: Callable[[int], None],
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Optimiser steps `start`..`total-1`; `on_save(step)` after each step `save_at` accepts.

    `step` passed to the callbacks counts finished steps (1..total). Gradients are clipped to
    norm 1.0 (the transformers Trainer's default).

    Raises:
        JobCancelled: `should_stop` returned True between steps.
    """
    recipe, model, opt = trainee.recipe, trainee.model, trainee.optimizer
    if opt is None:
        raise RuntimeError("no optimiser: this trainee was built for analysis only")
    warmup = int(recipe.warmup_ratio * total)
    device = next(model.parameters()).device
    pad = trainee.loaded.tokenizer.pad_token_id or 0
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    try:
        for step in range(start, total):
            if should_stop is not None and should_stop():
                raise JobCancelled()
            for group in opt.param_groups:
                group["lr"] = recipe.learning_rate * lr_factor(step, total, warmup, recipe.schedule)
            torch.manual_seed(recipe.seed_value * 1_000_003 + step)
            rows = batch_indices(len(data), recipe.batch_size, recipe.seed_value, step)
            ids, mask, labels = _right_pad(
                [data.input_ids[i] for i in rows], [data.labels[i] for i in rows], pad, device
            )
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            del trainee.losses[step:]
            trainee.losses.append(round(float(out.loss.detach()), 6))
            done = step + 1
            if progress is not None:
                progress(done, total, trainee.losses[-1])
            if save_at(done):
                on_save(done)
    finally:
        model.eval()


def _right_pad(
    ids: list[list[int]], labels: list[list[int]], pad: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    width = max(len(r) for r in ids)
    x = torch.full((len(ids), width), pad, dtype=torch.long)
    y = torch.full((len(ids), width), IGNORE, dtype=torch.long)
    m = torch.zeros((len(ids), width), dtype=torch.long)
    for i, (row, lab) in enumerate(zip(ids, labels, strict=True)):
        x[i, : len(row)] = torch.tensor(row)
        y[i, : len(lab)] = torch.tensor(lab)
        m[i, : len(row)] = 1
    return x.to(device), m.to(device), y.to(device)
