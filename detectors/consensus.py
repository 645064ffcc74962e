"""Several annotations of one sample: the consensus label and how much the annotators agree.

Votes are weighted by each annotator's estimated reliability (one minus their estimated error
rate, see :mod:`detectors.annotators`), the idea behind cleanlab's multi-annotator consensus;
ties go to the label with more annotators, then to the earliest. Only the most recent
``capacity`` sample ids are remembered (10,000, like the re-audit window), so memory stays flat.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ConsensusResult:
    """The consensus over every annotation of one sample so far."""

    label: str
    agreement: float
    annotations: dict[str, str]

    @property
    def unanimous(self) -> bool:
        return self.agreement == 1.0


class Consensus:
    """Tracks the annotations of each recent sample id.

    >>> consensus = Consensus()
    >>> consensus.add("img-1", "ann", "cat") is None  # a single annotation has no consensus yet
    True
    >>> result = consensus.add("img-1", "bob", "dog", reliability=lambda a: {"ann": 0.9, "bob": 0.5}[a])
    >>> result.label, result.agreement, result.unanimous
    ('cat', 0.5, False)
    """

    def __init__(self, capacity: int = 10_000):
        self.capacity = capacity
        self._annotations: OrderedDict[str, dict[str, str]] = OrderedDict()

    def add(self, sample_id: str, annotator_id: str | None, label: str,
            reliability: Callable[[str], float] = lambda _: 1.0) -> ConsensusResult | None:
        """Record one annotation; the consensus once the sample has two or more, else ``None``."""
        annotations = self._annotations.setdefault(sample_id, {})
        self._annotations.move_to_end(sample_id)
        annotations[annotator_id or f"anonymous-{len(annotations)}"] = label
        while len(self._annotations) > self.capacity:
            self._annotations.popitem(last=False)
        if len(annotations) < 2:
            return None
        weights: dict[str, float] = {}
        counts: dict[str, int] = {}
        for annotator, given in annotations.items():
            weights[given] = weights.get(given, 0.0) + max(reliability(annotator), 1e-6)
            counts[given] = counts.get(given, 0) + 1
        order = list(dict.fromkeys(annotations.values()))
        winner = max(order, key=lambda given: (weights[given], counts[given], -order.index(given)))
        return ConsensusResult(winner, counts[winner] / len(annotations), dict(annotations))
