"""The analysed points of a job: fine-tuning, activations and accuracy of every unit.

A `Unit` is one concrete condition at one set of weights (one result): an ICL condition gives
one, an SFT condition one per checkpoint step. `extract_units` trains (or finds the stored
checkpoints of) each SFT condition, then extracts each unit's activations and, when the spec
asks, scores its accuracy; every piece of work is reused from the store when it was done before.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reprlab.schemas.results import BehaviourResult, PromptRecord, PromptsFile
from reprlab.schemas.specs import ConcreteCondition, ICLCondition, JobSpec, SFTCondition
from reprlab.worker import store as keys
from reprlab.worker.data import Dataset
from reprlab.worker.errors import SpecError
from reprlab.worker.evaluate import SCORING_VERSION, score_options
from reprlab.worker.extract import Activations, extract_activations
from reprlab.worker.finetune import (
    TRAINING_VERSION,
    checkpoint_metadata,
    tokenize_training,
    total_steps,
    train,
)
from reprlab.worker.models import LoadedModel
from reprlab.worker.pipeline_context import EXTRACT_SHARE, JobContext, timed_stage
from reprlab.worker.prompts import Prompt, build_prompts, fixed_demos, training_texts


@dataclass
class Unit:
    """One analysed point: a concrete condition at one set of weights (one result)."""

    name: str
    condition: ConcreteCondition
    prompts: list[Prompt]
    demos: list[list[int]]
    model_fp: str
    model: Callable[[], LoadedModel]
    step: int | None = None
    losses: list[float] | None = None
    trained_on: list[int] | None = None
    acts: Activations | None = None


def _conditions(spec: JobSpec) -> list[ConcreteCondition]:
    """The spec's conditions with every k-sweep and seed list expanded."""
    return [one for condition in spec.conditions for one in condition.expand()]


def extract_units(ctx: JobContext, dataset: Dataset) -> list[Unit]:
    """Every analysed point with its activations (and accuracy), reusing stored work."""
    units: list[Unit] = []
    conditions = _conditions(ctx.spec)
    n = len(conditions)
    for i, condition in enumerate(conditions):
        ctx.check_stop()
        base = 0.05 + EXTRACT_SHARE * i / n
        share = EXTRACT_SHARE / n
        if isinstance(condition, SFTCondition):
            points = _train(ctx, dataset, condition, base, share / 2)
            base, share = base + share / 2, share / 2
        else:
            built = build_prompts(
                dataset, condition, ctx.spec.prompt,
                pool=ctx.pools.get(condition.group), given=ctx.given.get(condition.group),
            )  # fmt: skip
            points = [
                Unit(
                    name=condition.name, condition=condition, prompts=built,
                    demos=[list(p.demos) for p in built], model_fp=ctx.resolved.fingerprint,
                    model=ctx.model,
                )
            ]  # fmt: skip
        for j, unit in enumerate(points):
            ctx.check_stop()
            start, part = base + share * j / len(points), share / len(points)
            if ctx.spec.accuracy:  # scoring costs about what the extraction does
                part /= 2
                unit.acts = _extract_unit(ctx, unit, start, part)
                _behaviour_unit(ctx, dataset, unit, start + part, part)
            else:
                unit.acts = _extract_unit(ctx, unit, start, part)
            _record_prompts(ctx, unit)
        units += points
    return units


def _train(
    ctx: JobContext, dataset: Dataset, cond: SFTCondition, base: float, share: float
) -> list[Unit]:
    """Fine-tune (or find the stored checkpoints of) one SFT condition; one unit per step."""
    if cond.train_on == "train":
        indices: Sequence[int] = range(len(dataset.train))
    else:
        indices = fixed_demos(dataset, cond.k_value, cond.seed_value)
    pairs = training_texts(dataset, indices, ctx.spec.prompt)
    total = total_steps(len(pairs), cond)
    late = [s for s in cond.checkpoints if s > total]
    if late:
        raise SpecError(
            f"condition '{cond.name}' asks for checkpoint step {late[0]} but trains for "
            f"{total} steps ({len(pairs)} items, batch {cond.batch_size})",
            hint="list steps up to the total, or raise epochs/steps",
        )
    recipe_key = keys.digest({
        "v": keys.KEY_VERSION, "training": TRAINING_VERSION, "model": ctx.resolved.fingerprint,
        "dtype": ctx.spec.model.dtype, "texts": keys.digest(pairs), "format": ctx.fmt.key(),
        "recipe": cond.training_recipe(), "total": total,
    })  # fmt: skip
    steps = sorted({*cond.checkpoints, total})

    def ckpt_key(step: int) -> str:
        return f"adapters/{recipe_key}/step-{step}.safetensors"

    stage = f"train:{cond.name}"
    missing = [s for s in steps if not ctx.store.exists(ckpt_key(s))]
    with timed_stage(ctx.reporter, stage) as rec:
        if not missing:
            rec.outcome, rec.detail = "cached", f"reused {len(steps)} checkpoints of {recipe_key}"
        else:
            rec.detail = _run_training(ctx, cond, pairs, total, steps, missing, recipe_key,
                                       ckpt_key, stage, base, share)  # fmt: skip
    with ctx.store.open(ckpt_key(total)) as handle:
        final = checkpoint_metadata(handle)
    losses: list[float] = json.loads(final.get("losses", "[]"))
    zero_shot = ICLCondition(name=cond.name, k=0)
    prompts = build_prompts(dataset, zero_shot, ctx.spec.prompt)
    units = []
    for step in steps:
        name = cond.name if step == total else f"{cond.name}.step{step}"
        ctx.artifacts[f"adapters/{name}.safetensors"] = ckpt_key(step)
        units.append(
            Unit(
                name=name, condition=cond, prompts=prompts, demos=[],
                trained_on=list(indices) if cond.train_on == "demos" else None,
                model_fp=keys.digest([ctx.resolved.fingerprint, ckpt_key(step)]),
                model=functools.partial(ctx.tuned, cond, recipe_key, ckpt_key(step)),
                step=step, losses=losses[:step],
            )
        )  # fmt: skip
    return units


def _run_training(
    ctx: JobContext,
    cond: SFTCondition,
    pairs: list[tuple[str, str]],
    total: int,
    steps: list[int],
    missing: list[int],
    recipe_key: str,
    ckpt_key: Callable[[int], str],
    stage: str,
    base: float,
    share: float,
) -> str:
    """Train from scratch or from the latest stored state; store every missing checkpoint."""
    trainee = ctx.trainee(cond, recipe_key, for_training=True)
    data = tokenize_training(
        trainee.loaded.tokenizer, pairs, loss=cond.loss, max_length=cond.max_length
    )
    state_key = f"train-state/{recipe_key}.safetensors"
    start = 0
    if ctx.store.exists(state_key):
        blob = ctx.store.get_bytes(state_key)
        if int(checkpoint_metadata(blob)["step"]) <= missing[0]:
            start = trainee.load_state(blob)
    meta = {"recipe": recipe_key, "condition": cond.name, "model": ctx.resolved.fingerprint}
    if start == 0 and 0 in missing:
        ctx.store.put_bytes(ckpt_key(0), trainee.checkpoint_bytes(0, meta))

    def save(done: int) -> None:
        if done in steps:
            ctx.store.put_bytes(ckpt_key(done), trainee.checkpoint_bytes(done, meta))
        if done < total:
            ctx.store.put_bytes(state_key, trainee.state_bytes(done))

    def on_step(done: int, of: int, loss: float) -> None:
        msg = f"step {done}/{of}, loss {loss:.4f}"
        ctx.reporter.progress(stage, base + share * done / max(of, 1), msg)

    train(
        trainee, data, start=start, total=total,
        save_at=lambda done: done in steps or done % cond.save_every == 0, on_save=save,
        progress=on_step, should_stop=ctx.reporter.should_stop,
    )  # fmt: skip
    resumed = f"resumed at step {start}; " if start else ""
    first, last = trainee.losses[0], trainee.losses[-1]
    return f"{resumed}{total} steps on {len(pairs)} items; loss {first:.4f} -> {last:.4f}"


def _behaviour_unit(
    ctx: JobContext, dataset: Dataset, unit: Unit, base: float, share: float
) -> None:
    """Accuracy of one unit, reused from the store when the same scoring was done."""
    stage = f"accuracy:{unit.name}"
    options = list(dataset.options)
    if not options:
        ctx.warnings.setdefault(unit.name, []).append(
            "accuracy: the dataset has no closed label set (more than 20 distinct outputs)"
        )
        return
    gold = [options.index(q.output) for q in dataset.eval]
    key = "behaviour/" + keys.digest({
        "v": keys.KEY_VERSION, "scoring": SCORING_VERSION, "model": unit.model_fp,
        "dtype": ctx.spec.model.dtype, "format": ctx.fmt.key(),
        "prompts": keys.prompts_digest(unit.prompts), "options": options, "gold": gold,
    }) + ".json"  # fmt: skip
    with timed_stage(ctx.reporter, stage) as rec:
        if ctx.store.exists(key):
            result = BehaviourResult.model_validate_json(ctx.store.get_bytes(key))
            rec.outcome, rec.detail = "cached", f"reused {key}"
        else:
            loaded = unit.model()

            def on_batch(done: int, total: int) -> None:
                msg = f"{done}/{total} prompt-option pairs"
                ctx.reporter.progress(stage, base + share * done / max(total, 1), msg)

            scores = score_options(
                loaded.model, loaded.tokenizer, [p.text for p in unit.prompts], gold, options,
                ctx.fmt.continuation_prefix,
                batch_size=ctx.spec.extraction.batch_size, progress=on_batch,
                should_stop=ctx.reporter.should_stop,
            )  # fmt: skip
            result = BehaviourResult(
                accuracy=scores.accuracy, accuracy_norm=scores.accuracy_norm,
                first_token_accuracy=scores.first_token_accuracy, n_items=scores.n_items,
                options=scores.options, choices=scores.choices,
                boundary_merges=scores.boundary_merges,
            )  # fmt: skip
            ctx.store.put_bytes(key, result.model_dump_json().encode())
            rec.detail = f"accuracy {result.accuracy:.3f} over {result.n_items} items"
    if result.boundary_merges:
        ctx.warnings.setdefault(unit.name, []).append(
            f"accuracy: {result.boundary_merges} of {result.n_items} prompts merge with an "
            "option's first token; scored on the joint tokenisation past the common prefix"
        )
    ctx.behaviour[unit.name] = result


def _extract_unit(ctx: JobContext, unit: Unit, base: float, share: float) -> Activations:
    extraction = ctx.spec.extraction.model_dump(exclude={"batch_size"})
    key = keys.activations_key(
        model_fingerprint=unit.model_fp,
        dtype=ctx.spec.model.dtype,
        prompts_sha=keys.prompts_digest(unit.prompts),
        extraction=extraction,
        prompt_format=ctx.fmt.key(),
    )
    ctx.artifacts[f"activations/{unit.name}.safetensors"] = key
    stage = f"extract:{unit.name}"
    with timed_stage(ctx.reporter, stage) as rec:
        if ctx.store.exists(key):
            rec.outcome, rec.detail = "cached", f"reused {key}"
            return Activations.from_safetensors(ctx.store.get_bytes(key))
        loaded = unit.model()

        def on_batch(done: int, total: int) -> None:
            msg = f"{done}/{total} prompts"
            ctx.reporter.progress(stage, base + share * done / max(total, 1), msg)

        acts = extract_activations(
            loaded.model,
            loaded.tokenizer,
            unit.prompts,
            ctx.spec.extraction,
            progress=on_batch,
            should_stop=ctx.reporter.should_stop,
        )
        meta = {"condition": unit.name, "model": unit.model_fp}
        ctx.store.put_bytes(key, acts.to_safetensors(meta))
        rec.detail = f"{len(unit.prompts)} prompts x {len(acts.layers)} layers -> {key}"
    return acts


def _record_prompts(ctx: JobContext, unit: Unit) -> None:
    """Store the unit's exact prompts with the demos and the tokens read (content-keyed)."""
    if unit.acts is None:
        raise RuntimeError(f"unit {unit.name} has no activations")
    doc = PromptsFile(
        condition=unit.name,
        prompt_format=ctx.fmt.key(),
        prompts=[
            PromptRecord(item=p.item, text=p.text, demos=list(p.demos), n_tokens=n,
                         tokens_read=list(read), noisy_demos=list(p.noisy))
            for p, n, read in zip(unit.prompts, unit.acts.n_tokens, unit.acts.read, strict=True)
        ],
    )  # fmt: skip
    blob = doc.model_dump_json().encode()
    key = f"prompts/{hashlib.sha256(blob).hexdigest()}.json"
    if not ctx.store.exists(key):
        ctx.store.put_bytes(key, blob)
    ctx.artifacts[f"prompts/{unit.name}.json"] = key
