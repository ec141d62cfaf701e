"""Datasets: built-in generators (`sentiment`, `mcq`, `linear_regression`,
`reading_comprehension`), items inline in the spec, JSONL files, and real data: files (JSON,
JSONL, CSV, Parquet; by path or uploaded) and Hugging Face datasets, with field/split mapping.

`load_dataset(spec)` returns a `Dataset` with a demonstration/training pool and the queries
that are analysed, disjoint, deterministic given the spec's seed.
"""

from reprlab.worker.data.base import Dataset, Example
from reprlab.worker.data.loading import load_dataset

__all__ = ["Dataset", "Example", "load_dataset"]
