"""The contract every detector keeps, and the values they exchange.

Scores point one way everywhere in labelwatch: in [0, 1], **higher means more likely mislabeled**.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from detectors.neighbors import NeighborIndex


_ANONYMOUS = itertools.count()

SCORE_TOLERANCE = 1e-6
"""How far the score of a replayed sample may move; its flag, suggested label and event id may not.

Vectors are float32, and BLAS computes a row of a matrix product by another kernel for a batch of
another shape, or on another CPU, which moves a score in its last float32 bits (docs/reliability.md).
"""


@dataclass(frozen=True, slots=True)
class Batch:
    """A micro-batch of samples of one dataset, in stream order.

    ``vectors`` is an ``(n, d)`` float32 array; ``labels`` the given labels; ``user_probas`` the
    producer's own model probabilities per sample, or ``None`` where a sample carries none;
    ``ids`` the sample ids, which fold assignment and leave-one-out re-scoring rely on.
    ``annotated`` the labels as annotated where reviewers changed some (``None`` for a reviewer's
    corrected copy of a sample learned before); ``None`` when every label is as annotated.
    """

    vectors: np.ndarray
    labels: Sequence[str]
    user_probas: Sequence[Mapping[str, float] | None] | None = None
    ids: Sequence[str] | None = None
    annotated: Sequence[str | None] | None = None

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-d, got shape {self.vectors.shape}")
        if len(self.labels) != len(self.vectors):
            raise ValueError("vectors and labels must have the same length")
        if self.user_probas is not None and len(self.user_probas) != len(self.labels):
            raise ValueError("user_probas and labels must have the same length")
        if self.ids is None:  # anonymous samples get process-unique ids
            object.__setattr__(self, "ids", [f"anonymous-{next(_ANONYMOUS)}" for _ in self.labels])
        elif len(self.ids) != len(self.labels):
            raise ValueError("ids and labels must have the same length")
        if self.annotated is not None and len(self.annotated) != len(self.labels):
            raise ValueError("annotated and labels must have the same length")

    def keys(self) -> Sequence[str]:
        """The sample ids."""
        return self.ids

    def take(self, rows) -> Batch:
        """The sub-batch of the given row indices."""
        rows = list(rows)
        probas = [self.user_probas[i] for i in rows] if self.user_probas is not None else None
        annotated = [self.annotated[i] for i in rows] if self.annotated is not None else None
        return Batch(self.vectors[rows], [self.labels[i] for i in rows], probas, [self.ids[i] for i in rows], annotated)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, vectors, labels, user_probas=None, ids=None) -> Batch:
        """Build a batch from array-likes, casting vectors to float32."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(labels) == 0:
            vectors = vectors.reshape(0, vectors.shape[-1] if vectors.ndim == 2 else 0)
        return cls(vectors.reshape(len(labels), -1), list(labels), user_probas, None if ids is None else list(ids))


@dataclass(frozen=True, slots=True)
class Signal:
    """One detector's judgement of one sample.

    ``score`` is in [0, 1] (clamped on creation), higher means more likely mislabeled; ``flagged`` is the detector's own
    verdict; ``suggested_label`` is the label it believes instead, if any.
    """

    score: float
    flagged: bool
    suggested_label: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the one place a score is clamped: detectors, the combiner and every output rely on [0, 1]
        if not 0.0 <= self.score <= 1.0:
            object.__setattr__(self, "score", min(max(float(self.score), 0.0), 1.0))


NEUTRAL = Signal(score=0.0, flagged=False, details={"warming_up": True})
"""What a detector says while it has too little evidence: not suspect, not flagged."""


class Detector(ABC):
    """A streaming label-error detector over vectors and labels.

    Subclasses implement :meth:`score_many` (judge samples with what was learned so far) and
    :meth:`learn_many` (absorb samples). :meth:`process_many` runs them test-then-train, so no
    sample is ever judged by a detector that has already learned it.
    """

    name: ClassVar[str]
    Params: ClassVar[type]  # its parameters: a detectors.registry.Params subclass (see there)

    @classmethod
    def from_params(cls, params: Any, seed: int) -> Detector:
        """The detector, made from its validated ``Params`` and the service's seed."""
        raise NotImplementedError(f"{cls.__name__} declares no Params: it cannot be registered")

    @abstractmethod
    def score_many(self, batch: Batch) -> list[Signal]:
        """Judge each sample of ``batch`` without learning from it."""

    @abstractmethod
    def learn_many(self, batch: Batch) -> None:
        """Update the detector's state with ``batch``."""

    def reaudit(self, batch: Batch, *, final: bool = False, prove: bool = True) -> list[Signal | None] | None:
        """Re-judge samples this detector has already learned, still out of sample (a re-audit).

        ``final`` asks a detector with learned thresholds to refit them over ``batch`` alone, as a
        batch method would over a whole window (the final re-audit). A live re-audit (not ``final``)
        may answer ``None`` for a row it proves it would leave unflagged without re-scoring it (its
        cheaper path); with ``prove=False`` it re-scores every row. Returns ``None`` when the
        detector cannot re-score at all; a re-audit then keeps its first signal. The default.
        """
        return None

    def estimated_error_rate(self) -> float | None:
        """The share of learned samples this detector estimates are mislabelled, if it estimates one:
        the live flag budget follows the first voting detector that does. The default: ``None``."""
        return None

    def label_mix_of(self, vectors: np.ndarray, signals: Sequence[Signal | None]) -> list[dict[str, int]] | None:
        """For reviewers: the label counts (largest first) of the group each sample falls in, given the
        signal this detector gave it (``None``: none); ``None`` if the detector groups nothing (the default)."""
        return None

    @property
    def provisional(self) -> bool:
        """Whether the detector's flags rest on a provisional calibration: one fitted on little evidence,
        to be replaced. While it is, the monitor sends a flag of it only where the detectors that are
        not provisional all flag too (:meth:`~detectors.LabelMonitor.process`). The default: never."""
        return False

    @property
    def neighbor_index(self) -> NeighborIndex | None:
        """The detector's :class:`~detectors.neighbors.NeighborIndex` of past samples, if it keeps one
        (what the monitor shows reviewers a flagged sample's nearest earlier samples from)."""
        return None

    def process_many(self, batch: Batch) -> list[Signal]:
        """Score ``batch`` out of sample, then learn from it."""
        if len(batch) == 0:
            return []
        signals = self.score_many(batch)
        self.learn_many(batch)
        return signals

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LabelIndex:
    """A growing, stable mapping between label strings and dense integer ids.

    >>> index = LabelIndex()
    >>> index.encode(["cat", "dog", "cat"]).tolist()
    [0, 1, 0]
    >>> index.labels
    ['cat', 'dog']
    """

    def __init__(self) -> None:
        self.labels: list[str] = []
        self._ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def id_of(self, label: str) -> int:
        found = self._ids.get(label)
        if found is None:
            found = self._ids[label] = len(self.labels)
            self.labels.append(label)
        return found

    def encode(self, labels: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.id_of(label) for label in labels), dtype=np.int64, count=len(labels))
