"""Memory of reviewed false alarms, so that similar samples need stronger evidence to be flagged."""

from __future__ import annotations

import numpy as np

from detectors.assessment import Assessment


class FalseAlarmMemory:
    """Vectors, labels and scores of samples that reviewers said were labelled right after all.

    A new sample with the same label and a cosine similarity of at least ``similarity`` to a
    remembered false alarm is held to a higher bar: it stays flagged only if its score beats that
    false alarm's score by ``margin``. The memory keeps the most recent ``capacity`` false alarms.

    >>> memory = FalseAlarmMemory(similarity=0.9, margin=0.1)
    >>> memory.add(np.array([1.0, 0.0]), "cat", score=0.8)
    >>> memory.bar(np.array([[0.99, 0.05], [0.0, 1.0], [0.99, 0.05]]), ["cat", "cat", "dog"]).tolist()
    [0.9, 0.0, 0.0]
    """

    def __init__(self, *, capacity: int = 1000, similarity: float = 0.95, margin: float = 0.1):
        self.capacity = capacity
        self.similarity = similarity
        self.margin = margin
        self._vectors: list[np.ndarray] = []
        self._labels: list[str] = []
        self._scores: list[float] = []

    def __len__(self) -> int:
        return len(self._labels)

    def add(self, vector: np.ndarray, label: str, score: float) -> None:
        unit = np.asarray(vector, dtype=np.float64)
        self._vectors.append(unit / max(float(np.linalg.norm(unit)), 1e-12))
        self._labels.append(label)
        self._scores.append(float(score))
        if len(self._labels) > self.capacity:
            del self._vectors[0], self._labels[0], self._scores[0]

    def bar(self, vectors: np.ndarray, labels) -> np.ndarray:
        """The score each sample must exceed to stay flagged (0 where no false alarm is similar)."""
        bars = np.zeros(len(labels))
        if not self._labels or len(labels) == 0:
            return bars
        units = np.asarray(vectors, dtype=np.float64)
        units = units / np.maximum(np.linalg.norm(units, axis=1, keepdims=True), 1e-12)
        similar = units @ np.vstack(self._vectors).T >= self.similarity
        same_label = np.asarray(labels, dtype=object)[:, None] == np.asarray(self._labels, dtype=object)[None, :]
        scores = np.where(similar & same_label, np.asarray(self._scores)[None, :] + self.margin, 0.0)
        return np.round(scores.max(axis=1), 12)

    def hold_back(self, assessments: list[Assessment], vectors: np.ndarray, labels) -> list[Assessment]:
        """``assessments`` with the flags that do not beat a similar false alarm's score (:meth:`bar`) withdrawn."""
        if not len(self) or not any(a.verdict.flagged for a in assessments):
            return assessments
        bars = self.bar(vectors, labels).tolist()
        return [a.withdrawn(held_back="similar to a reviewed false alarm", bar=round(bar, 4))
                if a.verdict.flagged and a.verdict.score <= bar else a for a, bar in zip(assessments, bars)]
