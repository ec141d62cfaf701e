"""What every stage of a job shares: the reporter, the job's context and stage timing.

`JobContext` carries the spec, the artifact store and the models of one job (the shared base
model, or one private fine-tuning copy at a time); `timed_stage` records each stage in the
job's stage log. The stages themselves live in `pipeline_units`, `pipeline_metrics` and
`pipeline_report`; `pipeline.run_pipeline` runs them in order.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load as st_load

from reprlab.schemas.jobs import StageRecord
from reprlab.schemas.results import BehaviourResult, ModelInfo
from reprlab.schemas.specs import JobSpec, SFTCondition
from reprlab.server.storage import ArtifactStore
from reprlab.worker.data import Dataset
from reprlab.worker.errors import JobCancelled
from reprlab.worker.finetune import Trainee, make_trainee
from reprlab.worker.metrics import GraphCache
from reprlab.worker.models import LoadedModel, ModelCache, ResolvedModel, load_model
from reprlab.worker.prompts import PromptFormat

# Share of the progress bar each phase takes; extraction dominates on real models.
EXTRACT_SHARE = 0.75
METRIC_SHARE = 0.2


class Reporter(Protocol):
    """Where a pipeline reports progress and asks whether to stop."""

    def progress(self, stage: str, fraction: float, message: str) -> None: ...

    def stage_done(self, record: StageRecord) -> None: ...

    def should_stop(self) -> bool: ...


class NullReporter:
    """A reporter that records stages and never stops (tests, library use)."""

    def __init__(self) -> None:
        self.stages: list[StageRecord] = []

    def progress(self, stage: str, fraction: float, message: str) -> None:
        return None

    def stage_done(self, record: StageRecord) -> None:
        self.stages.append(record)

    def should_stop(self) -> bool:
        return False


@dataclass
class JobContext:
    """One job's spec, store, reporter and models, passed to every stage."""

    spec: JobSpec
    store: ArtifactStore
    reporter: Reporter
    resolved: ResolvedModel
    models: ModelCache
    model_cache: Path
    model_roots: Sequence[Path]
    fmt: PromptFormat
    graphs: GraphCache = field(default_factory=GraphCache)
    # Per spec ICL condition: the demonstration pool of its `demo_dataset`, and its given draws.
    pools: dict[str, Dataset] = field(default_factory=dict)
    given: dict[str, list[list[int]]] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    behaviour: dict[str, BehaviourResult] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    _loaded: LoadedModel | None = None
    _trainee: tuple[str, Trainee] | None = None
    _trainee_weights: str | None = None

    def model(self) -> LoadedModel:
        """The loaded model, loaded on first use (a fully cached job never loads it)."""
        if self._loaded is None:
            self._drop_trainee()
            with timed_stage(self.reporter, "load-model") as rec:
                self._loaded = self.models.get(
                    self.spec.model, cache_dir=self.model_cache, allowed_roots=self.model_roots
                )
                rec.detail = f"{self._loaded.info.resolved} on {self._loaded.info.device}"
        return self._loaded

    def trainee(self, cond: SFTCondition, recipe_key: str, *, for_training: bool) -> Trainee:
        """A private copy of the model wrapped for `cond` (one held at a time)."""
        held = self._trainee
        if held is not None and held[0] == recipe_key:
            if not for_training or held[1].optimizer is not None:
                return held[1]
        # One model in memory at a time: drop the shared base model and any other trainee.
        self._drop_trainee()
        if self._loaded is not None:
            self._loaded = None
            self.models.clear()
        with timed_stage(self.reporter, f"load-model:{cond.name}") as rec:
            trainee = make_trainee(
                load_model(self.resolved, self.spec.model), cond, for_training=for_training
            )
            rec.detail = f"private copy for {cond.method} fine-tuning"
        self._trainee = (recipe_key, trainee)
        return trainee

    def _drop_trainee(self) -> None:
        if self._trainee is not None:
            was_cuda = self._trainee[1].loaded.info.device.startswith("cuda")
            self._trainee = self._trainee_weights = None
            gc.collect()
            if was_cuda:
                torch.cuda.empty_cache()

    def tuned(self, cond: SFTCondition, recipe_key: str, checkpoint: str) -> LoadedModel:
        """The model of `cond` with the weights of a stored checkpoint."""
        trainee = self.trainee(cond, recipe_key, for_training=False)
        if self._trainee_weights != checkpoint:
            trainee.load_trainable(st_load(self.store.get_bytes(checkpoint)))
            self._trainee_weights = checkpoint
        return trainee.loaded

    def check_stop(self) -> None:
        if self.reporter.should_stop():
            raise JobCancelled()

    def model_info(self) -> ModelInfo:
        """The loaded model's info, or the resolved model's when no stage loaded it."""
        if self._loaded is not None:
            return self._loaded.info
        return self.resolved.info(self.spec.model)


@dataclass
class _StageResult:
    outcome: str = "done"
    detail: str = ""


@contextmanager
def timed_stage(reporter: Reporter, name: str) -> Iterator[_StageResult]:
    """Time a stage and record it in the job's stage log when it finishes."""
    rec = _StageResult()
    start = time.perf_counter()
    yield rec
    seconds = round(time.perf_counter() - start, 3)
    reporter.stage_done(
        StageRecord(name=name, outcome=rec.outcome, seconds=seconds, detail=rec.detail)
    )
