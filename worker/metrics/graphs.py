"""kNN graphs shared by every metric and comparison of a job that needs them.

A job computes each layer's graph once per analysed point (condition or checkpoint): the
per-layer metrics take it with the largest k any metric or comparison of that point needs,
and the comparisons read it back. A graph is exact, so the first k+1 columns of a graph with
more neighbours are the k-graph itself, ties included.

The cache holds graphs up to a memory budget and drops the least recently used first; a
graph that is no longer held is computed again, so the budget bounds memory, not correctness.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from reprlab.worker.metrics.knn import KnnGraph, knn_graph

# Bytes of graphs held at most by default: about 130 layers of N=5000 points at k=100.
DEFAULT_BUDGET_BYTES = 1 << 30


def truncate(graph: KnnGraph, k: int) -> KnnGraph:
    """The k-neighbour graph contained in `graph` (k <= graph.k); `graph` itself when equal."""
    if k > graph.k:
        raise ValueError(f"cannot take {k} neighbours from a graph of {graph.k}")
    if k == graph.k:
        return graph
    return KnnGraph(
        distances=np.ascontiguousarray(graph.distances[:, : k + 1]),
        indices=np.ascontiguousarray(graph.indices[:, : k + 1]),
    )


@dataclass(frozen=True)
class GraphSlot:
    """Where one layer's graph is kept for later use: a cache, a key, and the least k to take.

    Attributes:
        cache: the job's graph cache.
        key: names the layer's data, e.g. (result name, layer).
        min_k: neighbours to compute at least (what the comparisons will ask for).
    """

    cache: GraphCache
    key: Hashable
    min_k: int = 0


@dataclass(frozen=True)
class _Entry:
    rows: bytes
    graph: KnnGraph

    @property
    def nbytes(self) -> int:
        return int(self.graph.distances.nbytes + self.graph.indices.nbytes)


class GraphCache:
    """kNN graphs by key (e.g. (result name, layer)), each with the rows it was built on.

    Args:
        budget_bytes: graphs held at most (their arrays' bytes); 0 keeps none.
    """

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._held = 0

    @property
    def held_bytes(self) -> int:
        """Bytes of the graphs held now."""
        return self._held

    def graph(
        self,
        key: Hashable,
        x: Tensor,
        k: int,
        *,
        rows: Tensor | None = None,
        device: torch.device | None = None,
        chunk_size: int | None = None,
    ) -> KnnGraph:
        """The k-neighbour graph of x[rows] (every row when None), computed at most once.

        `key` must name the data: the same key always comes with the same `x`. A held graph
        of the key on the same rows with at least k neighbours is truncated to k; otherwise
        the graph is computed (`knn_graph`) and replaces the key's entry.
        """
        digest = _digest(rows)
        entry = self._entries.get(key)
        if entry is not None and entry.rows == digest and entry.graph.k >= k:
            self._entries.move_to_end(key)
            self.hits += 1
            return truncate(entry.graph, k)
        self.misses += 1
        graph = knn_graph(x if rows is None else x[rows], k, device=device, chunk_size=chunk_size)
        self._put(key, _Entry(digest, graph))
        return graph

    def _put(self, key: Hashable, entry: _Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._held -= old.nbytes
        if entry.nbytes > self.budget_bytes:
            return
        self._entries[key] = entry
        self._held += entry.nbytes
        while self._held > self.budget_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._held -= dropped.nbytes


def _digest(rows: Tensor | None) -> bytes:
    """Identifies a row subset: empty for every row."""
    if rows is None:
        return b""
    data = rows.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).digest()
