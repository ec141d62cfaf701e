"""Typed results of a finished job."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from reprlab.schemas._base import ResponseModel
from reprlab.schemas.correlations import CorrelationResult


class LayerCurve(ResponseModel):
    """One metric's value at each analysed layer of one condition."""

    metric: str = Field(description="Metric id, e.g. 'id_twonn'.")
    label: str = Field(description="Exact estimator label, e.g. 'TwoNN ID (discard 10%)'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Estimator parameters.")
    layers: list[int] = Field(description="Layer indices (HF hidden_states numbering).")
    values: list[float | None] = Field(description="Value per layer; null where undefined.")
    errors: list[float | None] | None = Field(
        default=None, description="Standard error per layer where the estimator gives one."
    )
    spread: list[float | None] | None = Field(
        default=None,
        description="In aggregates over seeds: the sample standard deviation per layer.",
    )
    ci_low: list[float | None] | None = Field(
        default=None, description="Lower end of the bootstrap confidence interval per layer."
    )
    ci_high: list[float | None] | None = Field(
        default=None, description="Upper end of the bootstrap confidence interval per layer."
    )
    summary: dict[str, float | None] = Field(
        default_factory=dict,
        description="Scalars over layers, e.g. 'auc': normalised area under the curve.",
    )


class BehaviourResult(ResponseModel):
    """Behavioural accuracy of one condition, scored by log-likelihood of the label options."""

    accuracy: float = Field(description="Fraction of items whose gold option is most likely.")
    accuracy_norm: float = Field(
        description="The same with each option's log-likelihood divided by its length in bytes."
    )
    first_token_accuracy: float = Field(
        description="Fraction of items whose greedy next token is the gold answer's first token."
    )
    n_items: int = Field(description="Number of scored items.")
    options: list[str] = Field(description="The label options that were scored.")
    choices: list[int] = Field(
        default_factory=list, description="Per item, the index of the most likely option."
    )
    boundary_merges: int = Field(
        default=0,
        description=(
            "Prompts whose last tokens merge with an option's first when prompt and "
            "continuation are tokenised together; they were scored on that joint tokenisation "
            "past the common prefix (0: every prompt's tokens are a prefix of each option's)."
        ),
    )


class PromptRecord(ResponseModel):
    """One query's exact prompt, as the model read it."""

    item: int = Field(description="Index of the query in the dataset's eval split.")
    text: str = Field(description="The exact prompt text (it ends at the answer position).")
    demos: list[int] = Field(description="Training-pool indices of the demonstrations, in order.")
    n_tokens: int = Field(description="Length of the prompt in tokens (special tokens included).")
    tokens_read: list[int] = Field(
        description="Token range [first, end) the state was read from (pooled over)."
    )
    noisy_demos: list[int] = Field(
        default_factory=list,
        description="Positions in `demos` whose output was replaced by a wrong label word.",
    )


class PromptsFile(ResponseModel):
    """The prompts artifact of one condition (`prompts/<condition>.json`)."""

    condition: str = Field(description="Condition (result) name.")
    prompt_format: dict[str, Any] = Field(description="The resolved prompt format.")
    prompts: list[PromptRecord] = Field(description="One record per query item, in item order.")


class ConditionResult(ResponseModel):
    """Everything measured for one condition."""

    name: str = Field(description="Condition name from the spec.")
    group: str | None = Field(
        default=None,
        description="The spec condition this result belongs to (a sweep has several results).",
    )
    paradigm: str = Field(description="'icl' or 'sft'.")
    n_items: int = Field(description="Number of query items analysed.")
    layers: list[int] = Field(description="Layer indices that were extracted.")
    duplicates: list[int] = Field(
        default_factory=list,
        description="Per layer, number of duplicate rows removed before the metrics.",
    )
    curves: list[LayerCurve] = Field(default_factory=list, description="Per-layer metric curves.")
    activations_artifact: str | None = Field(
        default=None, description="Artifact name of this condition's activations (safetensors)."
    )
    prompt_tokens_mean: float | None = Field(
        default=None, description="Mean prompt length in tokens."
    )
    k: int | None = Field(default=None, description="Demonstrations per query (ICL).")
    seed: int | None = Field(default=None, description="Seed of sampling / training.")
    selection: str | None = Field(default=None, description="How demonstrations were chosen.")
    label_noise: float | None = Field(
        default=None,
        description="ICL: fraction of each query's demonstrations shown with a wrong label.",
    )
    demo_dataset: str | None = Field(
        default=None, description="ICL: the dataset the demonstrations came from, if not the job's."
    )
    step: int | None = Field(
        default=None, description="SFT: the optimiser step of the analysed weights (0 = base)."
    )
    train_losses: list[float] | None = Field(
        default=None, description="SFT: the training loss of each step up to `step`."
    )
    adapter_artifact: str | None = Field(
        default=None,
        description="SFT: artifact name of the checkpoint (LoRA adapter or full weights).",
    )
    trained_on: list[int] | None = Field(
        default=None,
        description="SFT on demonstrations: the training-pool indices it was tuned on.",
    )
    demos: list[list[int]] = Field(
        default_factory=list,
        description="Per query item, the training-pool indices of its demonstrations, in order.",
    )
    prompt_hashes: list[str] = Field(
        default_factory=list,
        description=(
            "Per query item, the first 16 hex digits of the sha256 of its exact prompt text "
            "(UTF-8). The texts: `client.jobs.prompts(job, condition)`, `reprlab results ID "
            "--prompts N`, or the artifact named by `prompts_artifact`."
        ),
    )
    tokens_read: list[list[int]] = Field(
        default_factory=list,
        description=(
            "Per query item, the token range [first, end) of its prompt that the state was read "
            "from (position 'last': [n_tokens - 1, n_tokens]), in the prompt's own tokens with "
            "the tokenizer's special tokens."
        ),
    )
    prompt_format: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "The resolved prompt format: template, target delimiter, query suffix (where the "
            "prompt ends), demo separator, instruction, and the format version."
        ),
    )
    prompts_artifact: str | None = Field(
        default=None,
        description="Artifact name of this condition's prompts (JSON: text, demos, tokens read).",
    )
    behaviour: BehaviourResult | None = Field(
        default=None, description="Behavioural accuracy, when the spec asks for it."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description=(
            "Why some values are null, e.g. 'layer 0: id_gride: too few distinct points' "
            "(prompts that end in the same token share their embedding-layer state)."
        ),
    )

    def curve(self, metric: str) -> LayerCurve:
        """The curve of a metric id; KeyError if this condition has none."""
        for c in self.curves:
            if c.metric == metric:
                return c
        raise KeyError(f"condition {self.name!r} has no curve for metric {metric!r}")


class AccuracySummary(ResponseModel):
    """Accuracy over seeds."""

    mean: float = Field(description="Mean accuracy over the members.")
    std: float = Field(description="Sample standard deviation over the members.")
    values: list[float] = Field(description="Each member's accuracy, in member order.")


class AggregateResult(ResponseModel):
    """Mean and spread over the seeds of one condition (same k, same step)."""

    name: str = Field(description="Name of the members without their '.s<seed>' part.")
    group: str = Field(description="The spec condition.")
    members: list[str] = Field(description="Names of the results aggregated (one per seed).")
    k: int | None = Field(default=None, description="k shared by the members.")
    step: int | None = Field(default=None, description="SFT step shared by the members.")
    curves: list[LayerCurve] = Field(
        default_factory=list, description="Per metric: mean per layer, `spread` the std."
    )
    accuracy: AccuracySummary | None = Field(default=None, description="Accuracy over seeds.")


class ComparisonResult(ResponseModel):
    """A cross-condition comparison per layer, e.g. ICL vs IT cosine similarity."""

    metric: str = Field(
        description=(
            "Comparison id: 'cosine' (mean over queries of cos(h_a, h_b)), 'cka', "
            "'data_overlap', 'partition_ari', 'rsa'."
        )
    )
    label: str = Field(default="", description="Exact name, e.g. 'CKA, linear, debiased'.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters that identify this curve, e.g. {'k': 30}."
    )
    a: str = Field(description="First spec condition.")
    b: str = Field(description="Second spec condition.")
    k: int | None = Field(default=None, description="The swept k of these pairs, if any.")
    label_noise: float | None = Field(
        default=None, description="The swept label noise of these pairs, if any."
    )
    step: int | None = Field(
        default=None, description="With `steps`: the SFT step of b's checkpoint compared."
    )
    layers: list[int] = Field(description="Layer indices.")
    mean: list[float | None] = Field(
        description="Mean over pairs (seeds) per layer; null where undefined."
    )
    std: list[float | None] = Field(
        description="Sample standard deviation over pairs per layer (0 for a single pair)."
    )
    pairs: list[list[str]] = Field(description="The result names compared, [a, b] each.")
    ci_low: list[float | None] | None = Field(
        default=None,
        description=(
            "Lower end of the bootstrap confidence interval of `mean` per layer, when the "
            "comparison asks for `bootstrap`; null where undefined."
        ),
    )
    ci_high: list[float | None] | None = Field(
        default=None,
        description=(
            "Upper end of the bootstrap confidence interval of `mean` per layer, when the "
            "comparison asks for `bootstrap`; null where undefined."
        ),
    )
    matrix: list[list[float | None]] | None = Field(
        default=None,
        description="Layer x layer values (a's layers by b's), mean over pairs, when asked.",
    )


class ModelInfo(ResponseModel):
    """What was actually loaded."""

    name: str = Field(description="Model name as given in the spec.")
    resolved: str = Field(description="Where the weights came from (path or hub id@revision).")
    n_layers: int = Field(description="Number of transformer blocks.")
    hidden_size: int = Field(description="Width of the residual stream.")
    dtype: str = Field(description="Dtype of the forward passes.")
    device: str = Field(description="Device of the forward passes.")


class JobResults(ResponseModel):
    """The typed results of a succeeded job."""

    job_id: str = Field(description="Job id.")
    model: ModelInfo = Field(description="The model that was analysed.")
    conditions: list[ConditionResult] = Field(description="One entry per condition, spec order.")
    aggregates: list[AggregateResult] = Field(
        default_factory=list, description="Mean and spread over seeds, per seed-swept condition."
    )
    comparisons: list[ComparisonResult] = Field(
        default_factory=list, description="Cross-condition comparisons asked for in the spec."
    )
    correlations: list[CorrelationResult] = Field(
        default_factory=list,
        description=(
            "Representation change vs behavioural gain (Yousefi et al.): one entry per "
            "correlation of the spec and scope (across items: per condition)."
        ),
    )
    artifacts: list[str] = Field(
        default_factory=list, description="Names of downloadable artifacts of this job."
    )
    warnings: list[str] = Field(
        default_factory=list, description="Why some comparison values are null."
    )

    def condition(self, name: str) -> ConditionResult:
        """The result of a condition by name; KeyError if absent."""
        for c in self.conditions:
            if c.name == name:
                return c
        raise KeyError(f"no condition named {name!r}; have {[c.name for c in self.conditions]}")
