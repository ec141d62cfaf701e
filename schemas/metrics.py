"""Metric and comparison specs of a job: what is computed per layer, and between conditions.

Per-condition metrics (`MetricSpec`, by `name`) run on one condition's states at each layer;
comparisons (`ComparisonSpec`, by `metric`) pair two conditions' states of the same queries.
Label fields (`labels`, `label`) name the `labels` of the dataset's items, e.g. 'subject'.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from reprlab.schemas._base import StrictModel, tag_or_default

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
LABEL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"

RdmMethod = Literal["cosine", "correlation", "euclidean"]
RdmComparison = Literal["spearman", "kendall_tau_a", "pearson"]


class BootstrapSpec(StrictModel):
    """Percentile bootstrap confidence interval of a per-layer scalar.

    Nearest-neighbour estimators resample the per-point quantities they aggregate (e.g. the
    TwoNN ratios), not the points, which would create duplicates; comparisons and RSA resample
    the queries. Not offered by 'adp' (duplicated points break the density and the
    clustering) nor 'probe' (its `errors` already give the spread over folds).
    """

    n: int = Field(default=1000, ge=50, le=100_000, description="Bootstrap resamples.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="Interval coverage.")
    seed: int = Field(default=0, ge=0, description="Seed of the resampling.")


class TwoNNMetric(StrictModel):
    """TwoNN intrinsic dimension (Facco et al. 2017), as in Janapati & Ji."""

    name: Literal["id_twonn"] = Field(default="id_twonn", description="Metric id.")
    discard_fraction: float = Field(
        default=0.1,
        ge=0.0,
        lt=0.9,
        description="Fraction of the largest mu = r2/r1 ratios discarded before the fit.",
    )
    bootstrap: BootstrapSpec | None = Field(
        default=None, description="Also give a bootstrap confidence interval per layer."
    )


class GrideMetric(StrictModel):
    """Gride intrinsic dimension (Denti et al. 2022) over scales n2 = 2n1 = 2, 4, ..., range_max."""

    name: Literal["id_gride"] = Field(default="id_gride", description="Metric id.")
    range_max: int = Field(
        default=64,
        ge=4,
        le=4096,
        description="Largest neighbour rank n2 of the scale sweep (a power of two is natural).",
    )
    report_n2: int | None = Field(
        default=32,
        ge=2,
        description="The scale reported as the main curve (n2; n1 = n2/2). 32 is Doimo et al.'s.",
    )
    bootstrap: BootstrapSpec | None = Field(
        default=None,
        description="Also give a bootstrap confidence interval per layer at the report scale.",
    )

    @model_validator(mode="after")
    def _report_scale_in_sweep(self) -> GrideMetric:
        n2 = self.report_n2
        if n2 is not None and (n2 > self.range_max or n2 & (n2 - 1)):
            raise ValueError(
                f"report_n2={n2} is not a scale of the sweep n2 = 2, 4, 8, ... <= range_max="
                f"{self.range_max}; use a power of two no larger than range_max"
            )
        if self.bootstrap is not None and n2 is None:
            raise ValueError("bootstrap needs a report scale: set report_n2")
        return self


class MleMetric(StrictModel):
    """Levina-Bickel maximum-likelihood intrinsic dimension for each neighbour count k."""

    name: Literal["id_mle"] = Field(default="id_mle", description="Metric id.")
    ks: list[int] = Field(
        default_factory=lambda: [15, 25, 50, 75, 100],
        min_length=1,
        max_length=32,
        description="Neighbour counts k (each >= 2); one curve per k, the first is the main one.",
    )
    average: Literal["estimates", "inverses"] = Field(
        default="estimates",
        description=(
            "'estimates': the mean of the per-point estimates (Levina & Bickel 2004); "
            "'inverses': the inverse of the mean inverse (MacKay & Ghahramani's correction)."
        ),
    )
    bootstrap: BootstrapSpec | None = Field(
        default=None, description="Also give a bootstrap confidence interval per layer and k."
    )

    @model_validator(mode="after")
    def _ks_valid(self) -> MleMetric:
        if any(k < 2 for k in self.ks) or len(set(self.ks)) != len(self.ks):
            raise ValueError(f"ks must be distinct neighbour counts >= 2; got {self.ks}")
        return self


class DensityPeaksMetric(StrictModel):
    """The density-peak landscape (Doimo et al.): kNN density, then Advanced Density Peaks.

    Curves: the number of clusters (main), the fraction of core (non-halo) points, the mean
    log density, and the adjusted Rand index of the clusters against each label field.
    """

    name: Literal["adp"] = Field(default="adp", description="Metric id.")
    density_k: int = Field(
        default=16, ge=2, le=1024, description="Neighbours of the kNN density estimate."
    )
    intrinsic_dim: Literal["gride", "twonn"] = Field(
        default="gride",
        description=(
            "The intrinsic dimension the density uses: 'gride' at n1 = density_k, "
            "n2 = 2 density_k (Doimo et al.'s scale for k = 16), or 'twonn' (discard 10%)."
        ),
    )
    Z: float = Field(
        default=1.6, gt=0.0, le=100.0, description="Statistical confidence of merging (ADP Z)."
    )
    halo: bool = Field(default=False, description="Assign border points to a halo (label -1).")
    maxk: int = Field(
        default=100,
        ge=2,
        le=4096,
        description=(
            "Neighbours ADP uses to assign points and find saddles (dadapy's default 100; "
            "fewer points than maxk + 1: all of them)."
        ),
    )
    labels: list[str] | None = Field(
        default=None,
        max_length=16,
        description="Label fields to compare the clusters with (ARI); None: every label field.",
    )


class LabelOverlapMetric(StrictModel):
    """Neighbourhood label overlap: mean fraction of a point's neighbours sharing its label."""

    name: Literal["label_overlap"] = Field(default="label_overlap", description="Metric id.")
    labels: list[str] | None = Field(
        default=None, max_length=16, description="Label fields; None: every categorical field."
    )
    class_fraction: float | None = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description=(
            "Neighbours as a fraction of the mean class size (Doimo et al. use 0.3); set "
            "class_fraction to null and give k instead for a fixed neighbour count."
        ),
    )
    k: int | None = Field(default=None, ge=1, le=4096, description="A fixed neighbour count.")
    class_balanced: bool = Field(
        default=True,
        description=(
            "Average the overlap per class first, then over classes (dadapy's default "
            "'weighted' overlap, as Doimo et al. used); false: the plain mean over points."
        ),
    )
    bootstrap: BootstrapSpec | None = Field(
        default=None,
        description=(
            "Also give a bootstrap confidence interval per layer and label field, resampling "
            "the points' overlaps (not the points)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _k_replaces_default_fraction(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("k") is not None and "class_fraction" not in data:
            return {**data, "class_fraction": None}
        return data

    @model_validator(mode="after")
    def _one_neighbourhood(self) -> LabelOverlapMetric:
        if (self.k is None) == (self.class_fraction is None):
            raise ValueError("give exactly one of k and class_fraction, not both")
        return self


class Hypothesis(StrictModel):
    """A hypothesis RDM: from a label field, or given as an n x n matrix over the queries."""

    name: str | None = Field(
        default=None, description="Name of the curve; default: the label field."
    )
    label: str | None = Field(
        default=None, pattern=LABEL_PATTERN, description="Label field the RDM is built from."
    )
    kind: Literal["auto", "categorical", "numeric"] = Field(
        default="auto",
        description=(
            "'categorical': 0 for equal labels, 1 otherwise; 'numeric': |a - b|; 'auto': "
            "numeric when every value is a number."
        ),
    )
    matrix: list[list[float]] | None = Field(
        default=None,
        description="A user RDM over the analysed queries in dataset order (n x n, symmetric).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Hypothesis:
        if (self.label is None) == (self.matrix is None):
            raise ValueError("a hypothesis needs exactly one of 'label' and 'matrix'")
        if self.matrix is not None and self.name is None:
            raise ValueError("a hypothesis given as a matrix needs a 'name'")
        return self

    @property
    def title(self) -> str:
        return self.name or str(self.label)


class RsaMetric(StrictModel):
    """Representational similarity analysis (Yousefi et al.): model RDM vs hypothesis RDMs."""

    name: Literal["rsa"] = Field(default="rsa", description="Metric id.")
    hypotheses: list[Hypothesis] = Field(
        min_length=1, max_length=16, description="One curve per hypothesis RDM."
    )
    rdm: RdmMethod = Field(default="cosine", description="Dissimilarity of the model RDM.")
    compare: RdmComparison = Field(default="spearman", description="How RDMs are compared.")
    standardise: bool = Field(
        default=True,
        description="z-score each feature over the queries before the RDM (Yousefi et al.).",
    )
    bootstrap: BootstrapSpec | None = Field(
        default=None,
        description=(
            "Also give a bootstrap confidence interval per layer and hypothesis, resampling "
            "the queries (pairs of copies of one query left out); costs n comparisons."
        ),
    )


class ProbeMetric(StrictModel):
    """Per-layer linear probes with k-fold cross-validation: accuracy (labels) or R^2 (numbers)."""

    name: Literal["probe"] = Field(default="probe", description="Metric id.")
    labels: list[str] = Field(min_length=1, max_length=16, description="Label fields to probe.")
    kind: Literal["auto", "logistic", "ridge"] = Field(
        default="auto",
        description="'logistic' for categories, 'ridge' for numbers; 'auto' picks by the values.",
    )
    folds: int = Field(default=5, ge=2, le=20, description="Cross-validation folds.")
    regularisation: float = Field(
        default=1.0, gt=0.0, description="Logistic C (inverse strength) or ridge alpha."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the fold split.")


class AttentionRatioMetric(StrictModel):
    """Attention mass from the last token to the relevant span over the irrelevant span.

    Needs `extraction.attention` with both spans; measured in the extraction pass.
    """

    name: Literal["attention_ratio"] = Field(default="attention_ratio", description="Metric id.")
    relevant: str = Field(default="relevant", description="Span name of the numerator.")
    irrelevant: str = Field(default="irrelevant", description="Span name of the denominator.")
    bootstrap: BootstrapSpec | None = Field(
        default=None,
        description=(
            "Also give a bootstrap confidence interval per layer for every curve, resampling "
            "the queries."
        ),
    )


MetricSpec = Annotated[
    TwoNNMetric
    | GrideMetric
    | MleMetric
    | DensityPeaksMetric
    | LabelOverlapMetric
    | RsaMetric
    | ProbeMetric
    | AttentionRatioMetric,
    Field(discriminator="name"),
]


def metric_label_fields(spec: MetricSpec) -> list[str]:
    """The label fields a metric spec names explicitly (None-valued 'every field' excluded)."""
    if isinstance(spec, DensityPeaksMetric | LabelOverlapMetric):
        return list(spec.labels or [])
    if isinstance(spec, ProbeMetric):
        return list(spec.labels)
    if isinstance(spec, RsaMetric):
        return [h.label for h in spec.hypotheses if h.label is not None]
    return []


class _Comparison(StrictModel):
    a: str = Field(description="First condition (spec name).", pattern=NAME_PATTERN)
    b: str = Field(description="Second condition (spec name).", pattern=NAME_PATTERN)
    steps: bool = Field(
        default=False,
        description=(
            "b is an SFT condition with checkpoints: compare a with each of b's checkpoints "
            "(one result per step) instead of b's final weights only."
        ),
    )
    bootstrap: BootstrapSpec | None = Field(
        default=None,
        description=(
            "Also give a bootstrap confidence interval per layer of the reported mean over "
            "pairs, resampling the queries (the same resamples in every pair)."
        ),
    )


class CosineComparison(_Comparison):
    """Per layer, the cosine similarity of two conditions' states of the same query (Duan et al.).

    `a` and `b` name spec conditions; their concrete conditions are paired on the dimensions
    both sweep (k, seed), and a condition that sweeps nothing (e.g. the anchor, k=0) pairs with
    every member of the other. Reported per k, as mean and standard deviation over seeds.
    """

    metric: Literal["cosine"] = Field(default="cosine", description="Comparison id.")


class CkaComparison(_Comparison):
    """Linear CKA between the two conditions' states, per layer (or layer x layer)."""

    metric: Literal["cka"] = Field(description="Comparison id.")
    debiased: bool = Field(default=False, description="The debiased HSIC estimator.")
    across_layers: bool = Field(
        default=False, description="Also the layer x layer matrix (a's layers by b's)."
    )


class DataOverlapComparison(_Comparison):
    """Data overlap: the mean fraction of shared k nearest neighbours (Doimo et al.'s chi)."""

    metric: Literal["data_overlap"] = Field(description="Comparison id.")
    ks: list[int] = Field(
        default_factory=lambda: [30, 100, 300],
        min_length=1,
        max_length=16,
        description="Neighbour counts; one curve per k.",
    )


class PartitionAriComparison(_Comparison):
    """Adjusted Rand index between the ADP clusterings of the two conditions, per layer."""

    metric: Literal["partition_ari"] = Field(description="Comparison id.")
    density_k: int = Field(default=16, ge=2, le=1024, description="As in the 'adp' metric.")
    intrinsic_dim: Literal["gride", "twonn"] = Field(
        default="gride", description="As in the 'adp' metric."
    )
    Z: float = Field(default=1.6, gt=0.0, le=100.0, description="As in the 'adp' metric.")
    halo: bool = Field(default=False, description="As in the 'adp' metric.")
    maxk: int = Field(default=100, ge=2, le=4096, description="As in the 'adp' metric.")


class RsaComparison(_Comparison):
    """RSA between two conditions: their RDMs compared, per layer."""

    metric: Literal["rsa"] = Field(description="Comparison id.")
    rdm: RdmMethod = Field(default="cosine", description="Dissimilarity of both RDMs.")
    compare: RdmComparison = Field(default="spearman", description="How the RDMs are compared.")
    standardise: bool = Field(default=True, description="z-score features before the RDMs.")


ComparisonSpec = Annotated[
    Annotated[CosineComparison, Tag("cosine")]
    | Annotated[CkaComparison, Tag("cka")]
    | Annotated[DataOverlapComparison, Tag("data_overlap")]
    | Annotated[PartitionAriComparison, Tag("partition_ari")]
    | Annotated[RsaComparison, Tag("rsa")],
    Discriminator(
        tag_or_default("metric", "cosine"),
        custom_error_type="invalid_comparison_metric",
        custom_error_message=(
            "comparison metric must be one of 'cosine', 'cka', 'data_overlap', "
            "'partition_ari', 'rsa'"
        ),
    ),
]
