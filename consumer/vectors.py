"""A sample's vector: the producer's embedding, or its text embedded here; checked before judging."""

from __future__ import annotations

import time
from collections import Counter
from typing import Protocol

import numpy as np

from consumer.metrics import Metrics
from consumer.records import BatchResult, reject
from schemas import AnnotatedSample
from schemas.sample import FLOAT32_MAX


class Embedder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


class Vectors:
    """Turns a dataset's decoded samples into one float32 matrix, rejecting samples that do not fit."""

    def __init__(self, embedder: Embedder | None, metrics: Metrics):
        self.embedder = embedder
        self.metrics = metrics

    def of(self, dataset: str, dimension: int | None, items, result: BatchResult):
        """The (record, sample) items whose vector fits the dataset, and their matrix; the others
        become dead letters in ``result``. ``dimension`` is the dataset's, or ``None`` for a new
        dataset: then the most common dimension of these items fixes it."""
        if not items:
            return [], None
        vectors = self._vectors([sample for _, sample in items])
        dimension = dimension or Counter(len(v) for v in vectors).most_common(1)[0][0]
        kept, kept_vectors = [], []
        for (record, sample), vector in zip(items, vectors):
            if len(vector) != dimension:
                reason = f"embedding has dimension {len(vector)}, dataset {dataset!r} uses {dimension}"
                result.dead_letters.append((record, reject(record, reason, "dimension_mismatch")))
            else:
                kept.append((record, sample))
                kept_vectors.append(vector)
        if not kept:
            return [], None
        with np.errstate(over="ignore"):  # beyond float32 range becomes infinite: rejected just below
            matrix = np.array(kept_vectors, dtype=np.float32)
        finite = np.isfinite(matrix).all(axis=1)
        for row in np.flatnonzero(~finite).tolist():
            record = kept[row][0]
            result.dead_letters.append((record, reject(
                record, f"embedding values must lie within float32 range (|x| <= {FLOAT32_MAX:.4g})", "schema")))
        return [item for item, ok in zip(kept, finite.tolist()) if ok], matrix[finite]

    def _vectors(self, samples: list[AnnotatedSample]) -> list:
        vectors: list = [s.embedding for s in samples]  # lists of floats, stacked into float32 by the caller
        to_embed = [i for i, v in enumerate(vectors) if v is None]
        if to_embed:
            if self.embedder is None:
                raise RuntimeError("text samples need an embedding model")
            started = time.perf_counter()
            encoded = self.embedder.encode([samples[i].text for i in to_embed])
            self.metrics.embedding_seconds.observe(time.perf_counter() - started)
            for i, vector in zip(to_embed, encoded):
                vectors[i] = vector
        return vectors
