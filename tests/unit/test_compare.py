"""Comparisons between conditions: pairing (seeds, checkpoints), mean and spread, null layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprlab.schemas.metrics import (
    CkaComparison,
    CosineComparison,
    DataOverlapComparison,
    PartitionAriComparison,
    RsaComparison,
)
from reprlab.worker.aggregate import Member, compare_conditions
from reprlab.worker.metrics.cka import linear_cka
from reprlab.worker.metrics.rsa import compare_rdms, rdm, standardise

LAYERS = [0, 1, 2]


def _states(seed: int, n: int = 60) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    blobs = torch.randn(4, 8, generator=gen) * 6
    x = blobs[torch.arange(n) % 4] + torch.randn(n, 8, generator=gen)
    return torch.stack([x @ torch.randn(8, 16, generator=gen) for _ in LAYERS], dim=1)


def _member(name: str, group: str, data: int, step: int | None = None, **swept: int) -> Member:
    return Member(name, group, swept, LAYERS, _states(data), step=step)


def test_steps_compare_with_each_checkpoint_and_otherwise_only_the_final_weights() -> None:
    members = [
        _member("base", "base", 0),
        _member("sft", "sft", 1),
        _member("sft.step5", "sft", 2, step=5),
        _member("sft.step10", "sft", 3, step=10),
    ]
    final, _ = compare_conditions(members, CosineComparison(a="base", b="sft"))
    assert [(c.step, c.pairs) for c in final] == [(None, [["base", "sft"]])]
    steps, _ = compare_conditions(members, CosineComparison(a="base", b="sft", steps=True))
    assert [(c.step, c.pairs) for c in steps] == [
        (5, [["base", "sft.step5"]]),
        (10, [["base", "sft.step10"]]),
    ]


def test_cka_and_rsa_over_seeds_are_the_mean_and_std_of_direct_calls() -> None:
    members = [_member(f"a.s{s}", "a", s, seed=s) for s in (0, 1, 2)]
    members += [_member(f"b.s{s}", "b", 10 + s, seed=s) for s in (0, 1, 2)]
    (cka,), warnings = compare_conditions(members, CkaComparison(metric="cka", a="a", b="b",
                                                                 debiased=True))  # fmt: skip
    assert warnings == [] and cka.label == "CKA, linear, debiased" and cka.k is None
    per_seed = np.array([
        [linear_cka(_states(s)[:, j].double().numpy(), _states(10 + s)[:, j].double().numpy(),
                    debiased=True) for j in range(3)]
        for s in (0, 1, 2)
    ])  # fmt: skip
    assert cka.mean == pytest.approx(per_seed.mean(axis=0).tolist())
    assert cka.std == pytest.approx(per_seed.std(axis=0, ddof=1).tolist())

    (rsa,), _ = compare_conditions(members[::3], RsaComparison(metric="rsa", a="a", b="b"))
    assert rsa.pairs == [["a.s0", "b.s0"]]
    for j in range(3):
        x, y = _states(0)[:, j].double().numpy(), _states(10)[:, j].double().numpy()
        ref = compare_rdms(rdm(standardise(x), "cosine"), rdm(standardise(y), "cosine"), "spearman")
        assert rsa.mean[j] == pytest.approx(ref)


def test_identical_states_overlap_fully_and_share_their_partition() -> None:
    members = [_member("a", "a", 0), _member("b", "b", 0)]
    spec = DataOverlapComparison(metric="data_overlap", a="a", b="b", ks=[5, 10])
    chi, _ = compare_conditions(members, spec)
    assert [c.params for c in chi] == [{"k": 5}, {"k": 10}]
    assert all(v == pytest.approx(1.0) for c in chi for v in c.mean)
    spec_ari = PartitionAriComparison(metric="partition_ari", a="a", b="b", density_k=4)
    (ari,), _ = compare_conditions(members, spec_ari)
    assert ari.mean == pytest.approx([1.0, 1.0, 1.0])


def test_an_undefined_layer_is_null_with_its_reason_not_a_failed_job() -> None:
    a, b = _states(0), _states(1)
    a[:, 0, :] = 1.0  # a constant layer: CKA and RSA are undefined there
    members = [Member("a", "a", {}, LAYERS, a), Member("b", "b", {}, LAYERS, b)]
    (cka,), warnings = compare_conditions(members, CkaComparison(metric="cka", a="a", b="b"))
    assert cka.mean[0] is None and cka.std[0] is None
    assert cka.mean[1] is not None and any(w.startswith("a vs b: layer 0:") for w in warnings)
    chi, warnings = compare_conditions(
        members, DataOverlapComparison(metric="data_overlap", a="a", b="b", ks=[5, 60])
    )
    assert chi[0].mean[0] is None and chi[0].mean[1] is not None  # one distinct point at layer 0
    assert chi[1].mean == [None, None, None]  # k=60 needs more than the 60 queries
    assert any("k=60 needs more than 60 queries" in w for w in warnings)
