"""kNN graph: our exact engine (`knn_graph`) vs dadapy's `Data(x).compute_distances`.

Both sides find the k nearest neighbours of every point among N points in D dimensions and
return their distances and indices. dadapy 0.3.4 copies the data to float64 and runs sklearn's
exact brute-force search (float64 products); ours takes float32 product candidates and ranks
them by exact float64 distances. A bare float32 product `x @ x.T` (torch, same threads) is the
floor that any product-based exact search pays. Repetitions are interleaved (ours, dadapy,
bare, ...) so drifts in machine load hit every side; the minimum of each is compared (after one
untimed warm-up run of each, whose results are the ones compared).

    python benchmarks/knn.py --n 5000 --d 4096 --k 100 --repeats 3

The data is a Gaussian mixture (10 clusters in a 12-dimensional latent space) linearly embedded
in D dimensions with a common offset and isotropic noise, float32, fixed seed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch
from dadapy import Data
from threadpoolctl import threadpool_limits

from reprlab.schemas.metrics import (
    DensityPeaksMetric,
    GrideMetric,
    LabelOverlapMetric,
    MetricSpec,
    MleMetric,
    TwoNNMetric,
)
from reprlab.worker.metrics import compute_layer_metrics
from reprlab.worker.metrics.knn import KnnGraph, knn_graph

# Every neighbour-based metric of one layer, on one shared graph (k = 100, MLE's largest k):
# what a lab computes for every layer. RSA, CKA and probes do not use the graph; their cost is
# one Gram product (RSA, CKA) or a model fit per fold (probes), measured in their tests' notes.
SUITE: list[MetricSpec] = [
    TwoNNMetric(),
    GrideMetric(range_max=64, report_n2=32),
    MleMetric(),
    DensityPeaksMetric(labels=["cluster"]),
    LabelOverlapMetric(labels=["cluster"]),
]

CPU = torch.device("cpu")


def mixture(n: int, d: int, seed: int = 0, clusters: int = 10, latent: int = 12) -> np.ndarray:
    """[n, d] float32: a latent Gaussian mixture, embedded linearly, offset, plus noise."""
    return mixture_with_labels(n, d, seed, clusters, latent)[0]


def mixture_with_labels(
    n: int, d: int, seed: int = 0, clusters: int = 10, latent: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """`mixture` and each point's cluster id."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(clusters, latent))
    labels = rng.integers(clusters, size=n)
    z = centres[labels] + rng.normal(size=(n, latent))
    embed = rng.normal(size=(latent, d)) / np.sqrt(d)  # each latent unit ~ a unit vector
    offset = rng.normal(scale=2.0, size=d) / np.sqrt(d) * 10.0  # hidden states sit off-centre
    noise = rng.normal(scale=0.05, size=(n, d))
    return (z @ embed + offset + noise).astype(np.float32), labels


def dadapy_knn(x: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """dadapy's neighbours of `x` (distances, indices), its prints and warnings silenced."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = Data(x, n_jobs=threads)
        with threadpool_limits(threads):
            data.compute_distances(maxk=k)
    return data.distances, data.dist_indices


def same_sets(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> float:
    """Fraction of rows whose neighbour sets (columns 0..k, the point itself removed) agree."""
    rows = np.arange(a.shape[0])[:, None]
    a_sorted = np.sort(np.where(a == rows, -1, a), axis=1)
    b_sorted = np.sort(np.where(b == rows, -1, b), axis=1)
    return float(np.mean(np.all(a_sorted == b_sorted, axis=1)))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="number of points")
    parser.add_argument("--d", type=int, default=4096, help="dimensions")
    parser.add_argument("--k", type=int, default=100, help="neighbours per point")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="all sides")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    x_np, cluster = mixture_with_labels(args.n, args.d, args.seed)
    x = torch.from_numpy(x_np)
    labels = {"cluster": [f"c{c}" for c in cluster]}

    def suite() -> object:
        return compute_layer_metrics(x, SUITE, labels=labels, device=CPU)

    def ours() -> KnnGraph:
        return knn_graph(x, args.k, device=CPU)

    def theirs() -> tuple[np.ndarray, np.ndarray]:
        return dadapy_knn(x_np, args.k, args.threads)

    def bare() -> torch.Tensor:
        return x @ x.T

    bare()  # warm-up: allocator, BLAS threads
    graph, ref = ours(), theirs()  # warm-up, and the results compared below
    suite()  # warm-up
    times: dict[str, list[float]] = {"ours": [], "dadapy": [], "bare": [], "suite": []}
    sides = (("ours", ours), ("dadapy", theirs), ("bare", bare), ("suite", suite))
    for _ in range(args.repeats):
        for name, fn in sides:
            times[name].append(_timed(fn))

    t = {name: min(runs) for name, runs in times.items()}
    identical = same_sets(graph.indices, ref[1])
    rel_gap = np.abs(graph.distances - ref[0])[:, 1:] / graph.distances[:, 1:]
    speedup = t["dadapy"] / t["ours"]
    over_bare = t["ours"] / t["bare"]
    print(
        f"data: N={args.n}, D={args.d}, float32 Gaussian mixture (seed {args.seed}); k={args.k}; "
        f"CPU, {args.threads} threads; {args.repeats} interleaved repeats, minimum taken"
    )
    labels = {
        "ours": f"ours   knn_graph(x, k={args.k})",
        "dadapy": f"dadapy Data(x).compute_distances(maxk={args.k})",
        "bare": "bare   x @ x.T (float32, torch)",
        "suite": "suite  kNN metrics of one layer (see SUITE)",
    }
    for name, label in labels.items():
        runs = ", ".join(f"{s:.3f}" for s in times[name])
        print(f"{label:<48} {t[name]:7.3f} s   (runs {runs})")
    rows = [
        ("speed-up dadapy / ours", f"{speedup:.2f}x", ">= 1.5x", speedup >= 1.5),
        (
            "identical neighbour sets (self excluded)",
            f"{identical:.4%}",
            ">= 99.9%",
            identical >= 0.999,
        ),
        ("ratio ours / bare product", f"{over_bare:.2f}", "<= 1.3", over_bare <= 1.3),
        ("ratio metric suite / kNN alone", f"{t['suite'] / t['ours']:.2f}", "<= 1.5",
         t["suite"] / t["ours"] <= 1.5),
    ]  # fmt: skip
    for what, value, target, ok in rows:
        print(f"{what:<42} {value:>9}   target {target:<9} {'PASS' if ok else 'FAIL'}")
    print(f"max relative distance gap ours vs dadapy: {float(np.max(rel_gap)):.2g}")


if __name__ == "__main__":
    main()
