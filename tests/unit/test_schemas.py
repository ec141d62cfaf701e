"""The job-spec contract: defaults, strictness, and messages that say what to fix."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from reprlab.schemas import (
    BuiltinDataset,
    GrideMetric,
    ICLCondition,
    InlineDataset,
    Job,
    JobResults,
    JobSpec,
    JobStatus,
    JsonlDataset,
    TwoNNMetric,
)

MINIMAL: dict[str, Any] = {
    "model": {"name": "smollm2-135m-instruct"},
    "dataset": {"name": "sentiment"},
    "conditions": [{"name": "zero-shot"}],
}


def _with(**patch: Any) -> dict[str, Any]:
    return {**MINIMAL, **patch}


def test_minimal_spec_gets_study_defaults() -> None:
    spec = JobSpec.model_validate(MINIMAL)
    assert isinstance(spec.dataset, BuiltinDataset)
    assert spec.conditions == [ICLCondition(name="zero-shot", k=0)]
    assert spec.extraction.layers == "all"
    assert spec.extraction.position == "last"
    assert spec.extraction.hidden_state == "residual"
    assert spec.extraction.dtype == "float32"
    assert spec.metrics == [TwoNNMetric(discard_fraction=0.1)]
    assert spec.model.device == "auto" and spec.model.dtype == "float32"
    assert spec.prompt.demo_separator == "\n\n"


def test_dataset_kinds_are_discriminated_by_source() -> None:
    inline = {"source": "inline", "items": [{"input": "a", "output": "b", "labels": {"x": 1}}]}
    assert isinstance(JobSpec.model_validate(_with(dataset=inline)).dataset, InlineDataset)
    jsonl = {"source": "jsonl", "path": "/data/x.jsonl"}
    assert isinstance(JobSpec.model_validate(_with(dataset=jsonl)).dataset, JsonlDataset)


def test_spec_round_trips_through_json() -> None:
    spec = JobSpec.model_validate(
        _with(
            metrics=[{"name": "id_gride", "range_max": 128, "report_n2": 32}, {"name": "id_twonn"}]
        )
    )
    again = JobSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert isinstance(again.metrics[0], GrideMetric)


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"model": {"name": "m", "colour": "red"}}, "model.colour"),
        ({"dataset": {"name": "sentiment", "bogus": 1}}, "bogus"),
        ({"dataset": {"name": "imagenet"}}, "dataset.name"),
        ({"dataset": {"source": "zip"}}, "dataset"),
        ({"dataset": {"source": "inline", "items": []}}, "items"),
        ({"conditions": []}, "conditions"),
        ({"conditions": [{"name": "a", "k": -1}]}, "conditions.0.k"),
        ({"conditions": [{"name": "has space"}]}, "conditions.0.name"),
        ({"conditions": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"metrics": [{"name": "id_nope"}]}, "metrics.0"),
        ({"metrics": [{"name": "id_twonn", "discard_fraction": 0.95}]}, "discard_fraction"),
        ({"extraction": {"layers": []}}, "layers"),
        ({"extraction": {"layers": [1, 1]}}, "duplicate"),
        ({"model": {"name": "m", "device": "tpu"}}, "model.device"),
        ({"metrics": [{"name": "label_overlap", "k": 5, "class_fraction": 0.3}]}, "not both"),
        ({"metrics": [{"name": "rsa", "hypotheses": [{"kind": "numeric"}]}]}, "exactly one"),
        ({"metrics": [{"name": "rsa", "hypotheses": []}]}, "metrics.0.hypotheses"),
        ({"metrics": [{"name": "id_mle", "ks": [1, 5]}]}, "ks must be distinct"),
        ({"metrics": [{"name": "adp", "Z": 0}]}, "metrics.0.Z"),
        ({"metrics": [{"name": "probe", "labels": ["a"], "folds": 1}]}, "metrics.0.folds"),
        ({"metrics": [{"name": "attention_ratio"}]}, "extraction.attention"),
        ({"comparisons": [{"metric": "cca", "a": "zero-shot", "b": "zero-shot"}]}, "'cka'"),
        ({"comparisons": [{"metric": "cka", "a": "zero-shot", "b": "x"}]}, "no condition 'x'"),
        ({"extraction": {"position": "middle"}}, "extraction.position"),
    ],
)
def test_bad_specs_are_rejected_naming_the_field(patch: dict[str, Any], where: str) -> None:
    from reprlab.schemas.errors import spec_problems

    data = _with(**patch)
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate(data)
    # The message users see (API 422, CLI) points at the field to fix, without union tags.
    text = spec_problems([dict(e) for e in err.value.errors()], data)
    assert where in text and ".icl." not in text and ".builtin." not in text


def test_inline_splits_must_match_items() -> None:
    items = [{"input": "a", "output": "b"}, {"input": "c", "output": "d"}]
    with pytest.raises(ValidationError, match="splits has 1 entries but items has 2"):
        JobSpec.model_validate(
            _with(dataset={"source": "inline", "items": items, "splits": ["train"]})
        )


def test_job_status_finished() -> None:
    assert not JobStatus.QUEUED.finished and not JobStatus.RUNNING.finished
    assert JobStatus.SUCCEEDED.finished and JobStatus.FAILED.finished
    assert JobStatus.CANCELLED.finished


def test_job_and_results_accept_newer_server_fields() -> None:
    job = Job.model_validate(
        {
            "id": "j1",
            "status": "queued",
            "owner": "alice",
            "spec": MINIMAL,
            "created_at": "2026-01-01T00:00:00Z",
            "added_in_a_later_version": True,
        }
    )
    assert job.progress.stage == "queued"
    results = JobResults.model_validate(
        {
            "job_id": "j1",
            "model": {
                "name": "m", "resolved": "/m", "n_layers": 2, "hidden_size": 8,
                "dtype": "float32", "device": "cpu",
            },
            "conditions": [
                {
                    "name": "zs", "paradigm": "icl", "n_items": 3, "layers": [0, 1],
                    "curves": [
                        {"metric": "id_twonn", "label": "TwoNN", "layers": [0, 1],
                         "values": [1.0, None]}
                    ],
                }
            ],
        }
    )  # fmt: skip
    assert results.condition("zs").curve("id_twonn").values == [1.0, None]
    with pytest.raises(KeyError, match="no condition named 'x'"):
        results.condition("x")
    with pytest.raises(KeyError, match="no curve for metric 'id_gride'"):
        results.condition("zs").curve("id_gride")


def test_every_public_field_is_described() -> None:
    schema = JobSpec.model_json_schema()

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                assert "description" in prop, f"{path}.{name} has no description"
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(schema, "JobSpec")


def test_new_metrics_and_comparisons_round_trip_with_study_defaults() -> None:
    spec = JobSpec.model_validate(
        _with(
            metrics=[
                {"name": "adp"},
                {"name": "label_overlap"},
                {"name": "id_mle"},
                {"name": "rsa", "hypotheses": [{"label": "sentiment"}]},
            ],
            comparisons=[{"a": "zero-shot", "b": "zero-shot"},
                         {"metric": "data_overlap", "a": "zero-shot", "b": "zero-shot"}],
        )
    )  # fmt: skip
    adp, overlap, mle, _ = spec.metrics
    assert (adp.density_k, adp.Z, adp.halo, adp.maxk) == (16, 1.6, False, 100)  # type: ignore[union-attr]
    assert (overlap.class_fraction, overlap.class_balanced) == (0.3, True)  # type: ignore[union-attr]
    assert mle.ks == [15, 25, 50, 75, 100]  # type: ignore[union-attr]
    assert [c.metric for c in spec.comparisons] == ["cosine", "data_overlap"]
    assert spec.comparisons[1].ks == [30, 100, 300]  # type: ignore[union-attr]
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    # k replaces the default class fraction instead of clashing with it.
    k_only = JobSpec.model_validate(_with(metrics=[{"name": "label_overlap", "k": 7}]))
    assert k_only.metrics[0].class_fraction is None  # type: ignore[union-attr]
