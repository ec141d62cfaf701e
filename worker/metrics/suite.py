"""The metrics a job can ask for, one `@register_metric` class per metric id.

Each class turns a spec of `reprlab.schemas.metrics` into calls of the estimator modules
(`intrinsic_dim`, `landscape`, `rsa`, `probes`) on one layer's `LayerInput`, and labels every
output exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from reprlab.schemas.metrics import (
    AttentionRatioMetric,
    BootstrapSpec,
    DensityPeaksMetric,
    GrideMetric,
    Hypothesis,
    LabelOverlapMetric,
    MleMetric,
    ProbeMetric,
    RsaMetric,
    TwoNNMetric,
)
from reprlab.worker.errors import MetricError
from reprlab.worker.metrics.base import LayerInput, MetricOutput, is_numeric, register_metric
from reprlab.worker.metrics.bootstrap import (
    Statistic,
    gride_bootstrap,
    label_overlap_bootstrap,
    mean_statistic,
    mle_bootstrap,
    ratio_statistic,
    resample_ci,
    rsa_bootstrap,
    twonn_bootstrap,
)
from reprlab.worker.metrics.intrinsic_dim import (
    gride,
    gride_scales,
    gride_scaling,
    mle_sweep,
    twonn,
)
from reprlab.worker.metrics.knn import KnnGraph
from reprlab.worker.metrics.landscape import (
    Clustering,
    Density,
    adjusted_rand,
    adp_clustering,
    knn_density,
    label_overlap,
    label_overlap_k,
)
from reprlab.worker.metrics.probes import probe
from reprlab.worker.metrics.rsa import (
    COMPARE_LABELS,
    RDM_LABELS,
    categorical_rdm,
    compare_rdms,
    numeric_rdm,
    rdm,
    standardise,
    user_rdm,
)


def _percent(fraction: float) -> str:
    return f"{round(fraction * 100, 6):g}%"


@register_metric("id_twonn")
class TwoNNImpl:
    """TwoNN intrinsic dimension (`twonn`), one output."""

    def max_k(self, spec: TwoNNMetric, data: LayerInput) -> int:
        return 2

    def compute(self, data: LayerInput, spec: TwoNNMetric) -> list[MetricOutput]:
        est = twonn(data.neighbours(), spec.discard_fraction)
        if spec.discard_fraction == 0.0:
            label = "TwoNN ID (maximum likelihood, no discard)"
        else:
            label = f"TwoNN ID (discard {_percent(spec.discard_fraction)})"
        params = {"discard_fraction": spec.discard_fraction}
        interval = None
        if spec.bootstrap is not None:
            b = spec.bootstrap
            interval = twonn_bootstrap(
                data.neighbours(), spec.discard_fraction,
                n_boot=b.n, confidence=b.confidence, seed=b.seed,
            )  # fmt: skip
        return [MetricOutput(params, label, est.value, est.error, interval)]


@register_metric("id_gride")
class GrideImpl:
    """Gride intrinsic dimension over a scale sweep; the `report_n2` scale comes first."""

    def max_k(self, spec: GrideMetric, data: LayerInput) -> int:
        # Scales up to what the layer's points allow; the larger ones are null (see compute).
        return _fitting([n2 for _, n2 in self._scales(spec)], data.n_distinct)

    def compute(self, data: LayerInput, spec: GrideMetric) -> list[MetricOutput]:
        scales = self._scales(spec)
        n = data.n_distinct
        fit = [(n1, n2) for n1, n2 in scales if n2 < n]
        computed = gride_scaling(data.neighbours(), fit[-1][1]) if fit else []
        outputs = [
            MetricOutput(
                params={"n1": s.n1, "n2": s.n2},
                label=f"Gride ID (n1={s.n1}, n2={s.n2})",
                value=s.value,
                error=s.error,
            )
            for s in computed
        ] + [
            MetricOutput(
                params={"n1": n1, "n2": n2},
                label=f"Gride ID (n1={n1}, n2={n2})",
                value=None,
                why=_too_few(n2, n),
            )
            for n1, n2 in scales[len(computed) :]
        ]
        if spec.report_n2 is not None:
            main = next(i for i, o in enumerate(outputs) if o.params["n2"] == spec.report_n2)
            outputs.insert(0, outputs.pop(main))
            if spec.bootstrap is not None and outputs[0].value is not None:
                b = spec.bootstrap
                interval = gride_bootstrap(
                    data.neighbours(), spec.report_n2 // 2, spec.report_n2,
                    n_boot=b.n, confidence=b.confidence, seed=b.seed,
                )  # fmt: skip
                outputs[0] = replace(outputs[0], interval=interval)
        return outputs

    @staticmethod
    def _scales(spec: GrideMetric) -> list[tuple[int, int]]:
        scales = gride_scales(spec.range_max)
        n2s = [n2 for _, n2 in scales]
        if spec.report_n2 is not None and spec.report_n2 not in n2s:
            why = "exceeds range_max" if spec.report_n2 > spec.range_max else "is not a scale"
            raise MetricError(
                f"Gride report_n2={spec.report_n2} {why}: the sweep with "
                f"range_max={spec.range_max} has n2 = {', '.join(map(str, n2s))}",
                hint="set report_n2 to a power of two between 2 and range_max",
            )
        return scales


@register_metric("id_mle")
class MleImpl:
    """Levina-Bickel MLE intrinsic dimension, one curve per k (the first k is the main one)."""

    def max_k(self, spec: MleMetric, data: LayerInput) -> int:
        # The ks the layer's points allow; the larger ones are null (see compute).
        return _fitting(spec.ks, data.n_distinct)

    def compute(self, data: LayerInput, spec: MleMetric) -> list[MetricOutput]:
        graph = data.neighbours()
        how = "mean of per-point estimates" if spec.average == "estimates" else "inverse mean"
        n = data.n_distinct
        sweep = {s.k: s for s in mle_sweep(graph, [k for k in spec.ks if k < n], spec.average)}
        outputs = []
        for k in spec.ks:  # in the spec's order: the first k is the main curve
            label, params = (
                f"MLE ID (Levina-Bickel, k={k}, {how})",
                {"k": k, "average": spec.average},
            )
            if k not in sweep:
                outputs.append(MetricOutput(params, label, None, why=_too_few(k, n)))
                continue
            interval = None
            if spec.bootstrap is not None:
                b = spec.bootstrap
                interval = mle_bootstrap(
                    graph, k, spec.average, n_boot=b.n, confidence=b.confidence, seed=b.seed
                )
            outputs.append(MetricOutput(params, label, sweep[k].value, sweep[k].error, interval))
        return outputs


def _fitting(ks: Sequence[int], n: int) -> int:
    """The largest neighbour count of `ks` that n distinct points allow, else the largest
    (which then skips the whole metric at that layer)."""
    return max((k for k in ks if k < n), default=max(ks))


def _too_few(k: int, n: int) -> str:
    return f"too few distinct points: {k} neighbours need {k + 1}, this layer has {n}"


def _resample_interval(b: BootstrapSpec, n: int, statistic: Statistic) -> tuple[float, float]:
    return resample_ci(n, statistic, n_boot=b.n, confidence=b.confidence, seed=b.seed)


def _states(data: LayerInput) -> npt.NDArray[np.float64]:
    return data.x.double().cpu().numpy()


@register_metric("rsa")
class RsaImpl:
    """Model RDM vs each hypothesis RDM (Yousefi et al.); one curve per hypothesis."""

    def max_k(self, spec: RsaMetric, data: LayerInput) -> int:
        for h in spec.hypotheses:
            if h.label is not None:
                data.label(h.label)  # a missing field is a spec error, before any work
        return 0

    def compute(self, data: LayerInput, spec: RsaMetric) -> list[MetricOutput]:
        x = _states(data)
        if spec.standardise:
            x = standardise(x)
        model = rdm(x, spec.rdm)
        n = x.shape[0]
        outputs = []
        for h in spec.hypotheses:
            hyp, kind = self._hypothesis(data, h, n)
            interval = None
            if spec.bootstrap is not None:
                b = spec.bootstrap
                interval = rsa_bootstrap(
                    model, hyp, spec.compare, n_boot=b.n, confidence=b.confidence, seed=b.seed
                )
            outputs.append(
                MetricOutput(
                    params={"hypothesis": h.title},
                    label=(
                        f"RSA: {COMPARE_LABELS[spec.compare]} of the model RDM "
                        f"({RDM_LABELS[spec.rdm]}"
                        f"{', standardised features' if spec.standardise else ''}) with the "
                        f"{kind} RDM of {h.title!r}"
                    ),
                    value=compare_rdms(model, hyp, spec.compare),
                    interval=interval,
                )
            )
        return outputs

    @staticmethod
    def _hypothesis(data: LayerInput, h: Hypothesis, n: int) -> tuple[npt.NDArray[np.float64], str]:
        if h.matrix is not None:
            return user_rdm(np.asarray(h.matrix, dtype=np.float64), n), "user"
        values = data.label(str(h.label))
        numeric = is_numeric(values)
        if h.kind == "numeric" and not numeric:
            raise MetricError(
                f"hypothesis {h.title!r} is numeric but label {h.label!r} has non-number values",
                hint="use kind 'categorical' or 'auto'",
            )
        if h.kind == "numeric" or (h.kind == "auto" and numeric):
            return numeric_rdm([float(v) for v in values]), "numeric |a - b|"
        return categorical_rdm(values), "categorical (0 same, 1 different)"


@register_metric("probe")
class ProbeImpl:
    """Cross-validated linear probe per label field: accuracy or R^2, spread over folds."""

    def max_k(self, spec: ProbeMetric, data: LayerInput) -> int:
        for name in spec.labels:
            data.label(name)
        return 0

    def compute(self, data: LayerInput, spec: ProbeMetric) -> list[MetricOutput]:
        x = _states(data)
        outputs = []
        for name in spec.labels:
            values = data.label(name)
            kind = spec.kind
            if kind == "auto":
                kind = "ridge" if is_numeric(values) else "logistic"
            y: list[Any] = (
                [float(v) for v in values] if kind == "ridge" else [str(v) for v in values]
            )
            res = probe(
                x, y, kind, folds=spec.folds, seed=spec.seed,
                C=spec.regularisation, alpha=spec.regularisation,
            )  # fmt: skip
            outputs.append(
                MetricOutput(
                    params={"label": name},
                    label=f"{res.label} of {name!r}",
                    value=res.mean,
                    error=res.std,
                )
            )
        return outputs


@register_metric("attention_ratio")
class AttentionRatioImpl:
    """Attention mass to the relevant span over the irrelevant span (Yousefi et al.).

    The ratio of the masses summed over queries (robust to queries that barely attend to the
    irrelevant span), then the mean mass on each span; with per-head extraction, the ratio of
    each head follows.
    """

    def max_k(self, spec: AttentionRatioMetric, data: LayerInput) -> int:
        self._columns(spec, data)
        return 0

    def compute(self, data: LayerInput, spec: AttentionRatioMetric) -> list[MetricOutput]:
        rel, irr = self._columns(spec, data)
        att = data.attention
        if att is None:
            raise MetricError("attention was not extracted")
        if not np.all(np.isfinite(att[..., [rel, irr]])):
            raise MetricError("no attention at this layer (the embedding layer has none)")
        r, i = att[..., rel], att[..., irr]  # [n] or [n, heads]
        what = f"{spec.relevant!r} / {spec.irrelevant!r}"
        # Per query: the masses summed (ratio) or averaged (means) over heads, so that every
        # statistic is one of per-query values and the bootstrap can resample the queries.
        r_sum, i_sum = r.reshape(len(r), -1).sum(axis=1), i.reshape(len(i), -1).sum(axis=1)
        r_mean, i_mean = r.reshape(len(r), -1).mean(axis=1), i.reshape(len(i), -1).mean(axis=1)

        def ratio(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float | None:
            den = float(b.sum())
            return float(a.sum()) / den if den > 0 else None

        def out(
            params: dict[str, Any], label: str, value: float | None, stat: Statistic
        ) -> MetricOutput:
            interval = None
            if spec.bootstrap is not None and value is not None:
                interval = _resample_interval(spec.bootstrap, len(r), stat)
            return MetricOutput(params, label, value, interval=interval)

        outputs = [
            out(
                {"stat": "ratio"},
                f"attention ratio {what} from the last token (summed over queries)",
                ratio(r, i),
                ratio_statistic(r_sum, i_sum),
            ),
            out(
                {"stat": "relevant"},
                f"attention mass on {spec.relevant!r} from the last token (mean)",
                float(r.mean()),
                mean_statistic(r_mean),
            ),
            out(
                {"stat": "irrelevant"},
                f"attention mass on {spec.irrelevant!r} from the last token (mean)",
                float(i.mean()),
                mean_statistic(i_mean),
            ),
        ]
        if r.ndim == 2:
            outputs += [
                out(
                    {"stat": "ratio", "head": h},
                    f"attention ratio {what}, head {h}",
                    ratio(r[:, h], i[:, h]),
                    ratio_statistic(r[:, h], i[:, h]),
                )
                for h in range(r.shape[1])
            ]
        return outputs

    @staticmethod
    def _columns(spec: AttentionRatioMetric, data: LayerInput) -> tuple[int, int]:
        if data.attention is None:
            raise MetricError(
                "attention_ratio needs attention masses, which this job did not extract",
                hint="set extraction.attention with the spans to measure",
            )
        cols = []
        for span in (spec.relevant, spec.irrelevant):
            if span not in data.attention_spans:
                raise MetricError(
                    f"attention_ratio needs span {span!r}; the extraction measured "
                    f"{data.attention_spans}",
                    hint="list the span in extraction.attention.spans",
                )
            cols.append(data.attention_spans.index(span))
        return cols[0], cols[1]


def landscape_needs(density_k: int, id_method: str, maxk: int, n: int) -> int:
    """Neighbours the density-peak landscape needs on n distinct points."""
    need_id = 2 * density_k if id_method == "gride" else 2
    return max(density_k, need_id, min(maxk, n - 1))


def landscape_clusters(
    graph: KnnGraph, density_k: int, id_method: str, Z: float, halo: bool, maxk: int
) -> tuple[Clustering, Density]:
    """ID on the graph, then the kNN density with that ID, then ADP clusters (Doimo et al.).

    The ID is Gride at n1 = density_k, n2 = 2 density_k, or TwoNN discarding 10%.
    """
    if id_method == "gride":
        dim = gride(graph, density_k, 2 * density_k).value
    else:
        dim = twonn(graph, 0.1).value
    density = knn_density(graph, density_k, dim)
    clusters = adp_clustering(graph, density, Z, halo, maxk=min(maxk, graph.k))
    return clusters, density


@register_metric("adp")
class DensityPeaksImpl:
    """Density-peak landscape: clusters, core fraction, mean log density, ARI per label."""

    def max_k(self, spec: DensityPeaksMetric, data: LayerInput) -> int:
        for name in spec.labels or []:
            data.label(name)
        return landscape_needs(spec.density_k, spec.intrinsic_dim, spec.maxk, len(data.keep))

    def compute(self, data: LayerInput, spec: DensityPeaksMetric) -> list[MetricOutput]:
        graph = data.neighbours()
        clusters, density = landscape_clusters(
            graph, spec.density_k, spec.intrinsic_dim, spec.Z, spec.halo, spec.maxk
        )
        what = (
            f"ADP (Z={spec.Z:g}, kNN density k={spec.density_k}, "
            f"{'Gride' if spec.intrinsic_dim == 'gride' else 'TwoNN'} ID"
            f"{', halo' if spec.halo else ''})"
        )
        outputs = [
            MetricOutput(
                {"stat": "n_clusters"}, f"number of clusters, {what}", clusters.n_clusters
            ),
            MetricOutput(
                {"stat": "core_fraction"},
                f"fraction of core (non-halo) points, {what}",
                clusters.core_fraction,
            ),
            MetricOutput(
                {"stat": "log_density"},
                f"mean log kNN density (k={spec.density_k}, ID {density.intrinsic_dim:.3g})",
                float(np.mean(density.log_den)),
            ),
        ]
        fields = spec.labels if spec.labels is not None else data.categorical_fields()
        assigned = clusters.labels >= 0
        for name in fields:
            truth = data.label(name, unique=True)
            value = adjusted_rand(
                clusters.labels[assigned], [t for t, a in zip(truth, assigned, strict=True) if a]
            )
            outputs.append(
                MetricOutput(
                    {"stat": "ari", "label": name},
                    f"adjusted Rand index of the ADP clusters with {name!r}"
                    f"{' (halo points left out)' if spec.halo else ''}",
                    value,
                )
            )
        return outputs


@register_metric("label_overlap")
class LabelOverlapImpl:
    """Neighbourhood label overlap per label field (Doimo et al.)."""

    def max_k(self, spec: LabelOverlapMetric, data: LayerInput) -> int:
        fields = self._fields(spec, data)
        if spec.k is not None:
            return spec.k
        fraction = float(spec.class_fraction or 0.0)
        return max(label_overlap_k(data.label(f, unique=True), fraction) for f in fields)

    def compute(self, data: LayerInput, spec: LabelOverlapMetric) -> list[MetricOutput]:
        graph = data.neighbours()
        if spec.k is not None:
            hood = f"k={spec.k}"
        else:
            hood = f"k = {spec.class_fraction:g} x class size"
        balanced = ", class-balanced" if spec.class_balanced else ""
        k, fraction = spec.k, spec.class_fraction if spec.k is None else None
        outputs = []
        for name in self._fields(spec, data):
            labels = data.label(name, unique=True)
            interval = None
            if spec.bootstrap is not None:
                b = spec.bootstrap
                interval = label_overlap_bootstrap(
                    graph, labels, k=k, class_fraction=fraction,
                    class_balanced=spec.class_balanced,
                    n_boot=b.n, confidence=b.confidence, seed=b.seed,
                )  # fmt: skip
            outputs.append(
                MetricOutput(
                    {"label": name},
                    f"label overlap of {name!r} ({hood}{balanced})",
                    label_overlap(
                        graph,
                        labels,
                        k=k,
                        class_fraction=fraction,
                        class_balanced=spec.class_balanced,
                    ),
                    interval=interval,
                )
            )
        return outputs

    @staticmethod
    def _fields(spec: LabelOverlapMetric, data: LayerInput) -> list[str]:
        fields = spec.labels if spec.labels is not None else data.categorical_fields()
        for name in fields:
            data.label(name)
        if not fields:
            raise MetricError(
                "label_overlap found no categorical label field on every item",
                hint="give the items labels, or name the fields in 'labels'",
            )
        return list(fields)
