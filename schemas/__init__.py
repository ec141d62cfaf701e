"""Pydantic schemas shared by the SDK, the server and the workers (no I/O, no torch)."""

from reprlab.schemas.jobs import Job, JobError, JobList, JobStatus, Progress, StageRecord
from reprlab.schemas.results import (
    BehaviourResult,
    ConditionResult,
    JobResults,
    LayerCurve,
    ModelInfo,
)
from reprlab.schemas.specs import (
    BuiltinDataset,
    Condition,
    DatasetSpec,
    ExtractionSpec,
    GrideMetric,
    ICLCondition,
    InlineDataset,
    Item,
    JobSpec,
    JsonlDataset,
    MetricSpec,
    ModelRef,
    PromptSpec,
    TwoNNMetric,
)

__all__ = [
    "BehaviourResult",
    "BuiltinDataset",
    "Condition",
    "ConditionResult",
    "DatasetSpec",
    "ExtractionSpec",
    "GrideMetric",
    "ICLCondition",
    "InlineDataset",
    "Item",
    "Job",
    "JobError",
    "JobList",
    "JobResults",
    "JobSpec",
    "JobStatus",
    "JsonlDataset",
    "LayerCurve",
    "MetricSpec",
    "ModelInfo",
    "ModelRef",
    "Progress",
    "PromptSpec",
    "StageRecord",
    "TwoNNMetric",
]
