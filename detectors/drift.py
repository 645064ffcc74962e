"""Drift in how often each category occurs: labels in the stream, or samples per cluster.

One river ADWIN per category watches the indicator "this sample is in the category". When a
category's share of the stream changes, ADWIN cuts its window and a :class:`ShareShift` says
which category, and its share before and after.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from river.drift import ADWIN


@dataclass(frozen=True)
class ShareShift:
    """The share of ``category`` in the stream moved from ``before`` to ``after``."""

    category: Hashable
    before: float
    after: float
    at: int


class ShareDrift:
    """Detects changes in the share of each category among recent samples.

    ``before`` is the category's share over the whole stream until then (a running count: asking
    ADWIN for its estimate before every update would double the cost), ``after`` ADWIN's estimate
    once it cut its window, which may still hold some older samples, so it understates the move.

    >>> drift = ShareDrift()
    >>> stream = ["cat", "dog"] * 1000 + ["cat", "cat", "cat", "dog"] * 500
    >>> shifts = [shift for value in stream for shift in drift.update([value])]
    >>> sorted({shift.category for shift in shifts})
    ['cat', 'dog']
    >>> cat = next(s for s in shifts if s.category == "cat")
    >>> 2000 < cat.at < 2400 and cat.after > cat.before
    True
    """

    def __init__(self, *, delta: float = 0.002, max_categories: int = 1000):
        self.delta = delta
        self.max_categories = max_categories
        self._detectors: dict[Hashable, ADWIN] = {}
        self._counts: dict[Hashable, int] = {}
        self.n = 0

    def update(self, categories: Iterable[Hashable]) -> list[ShareShift]:
        """Feed the categories of the next samples, in order; returns the shifts they revealed."""
        shifts = []
        for category in categories:
            if category not in self._detectors and len(self._detectors) < self.max_categories:
                detector = self._detectors[category] = ADWIN(delta=self.delta)
                for _ in range(min(self.n, 1000)):  # absent so far: its recent share was 0
                    detector.update(0.0)
            for name, detector in self._detectors.items():
                detector.update(1.0 if name == category else 0.0)
                if detector.drift_detected:
                    before = self._counts.get(name, 0) / self.n if self.n else 0.0
                    shifts.append(ShareShift(name, before, float(detector.estimation), self.n))
            self._counts[category] = self._counts.get(category, 0) + 1
            self.n += 1
        return shifts

    def shares(self) -> dict[Hashable, float]:
        """Each category's recent share, as ADWIN currently estimates it."""
        return {name: float(detector.estimation) for name, detector in self._detectors.items()}
