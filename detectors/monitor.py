"""One dataset's detectors and combiner, run together over micro-batches."""

from __future__ import annotations

from dataclasses import dataclass, field

from detectors.base import Batch, Detector, Signal
from detectors.cluster import ClusterDisagreement
from detectors.combine import Combiner
from detectors.model import ModelDisagreement


@dataclass(frozen=True)
class MonitorConfig:
    """How a dataset's detectors are built. Every dataset gets its own, fresh, from this."""

    n_clusters: int = 32
    cluster_window: int = 4096
    min_cluster_size: int = 10
    min_majority: float = 0.8
    model_confidence: float = 0.5
    model_warmup: int = 50
    model_max_features: int = 64
    user_weight: float = 0.5
    policy: str = "union"
    seed: int = 0

    def build_detectors(self) -> list[Detector]:
        return [
            ClusterDisagreement(self.n_clusters, window=self.cluster_window,
                                min_cluster_size=self.min_cluster_size,
                                min_majority=self.min_majority, seed=self.seed),
            ModelDisagreement(confidence=self.model_confidence, warmup=self.model_warmup,
                              user_weight=self.user_weight, max_features=self.model_max_features,
                              seed=self.seed),
        ]


@dataclass(frozen=True, slots=True)
class Assessment:
    """The combined verdict on one sample, with every detector's own signal."""

    verdict: Signal
    signals: dict[str, Signal]

    @property
    def cluster_id(self) -> int | None:
        cluster = self.signals.get(ClusterDisagreement.name)
        return cluster.details.get("cluster_id") if cluster else None


@dataclass
class LabelMonitor:
    """Runs every detector of one dataset test-then-train and combines their signals.

    >>> import numpy as np
    >>> monitor = LabelMonitor.from_config(MonitorConfig(n_clusters=2, model_warmup=10))
    >>> assessments = monitor.process(Batch.of(np.eye(4)[[0, 1, 0, 1]], ["a", "b", "a", "b"]))
    >>> [a.verdict.flagged for a in assessments]
    [False, False, False, False]
    """

    detectors: list[Detector]
    combiner: Combiner = field(default_factory=lambda: Combiner.parse("union"))
    dimension: int | None = None

    @classmethod
    def from_config(cls, config: MonitorConfig) -> LabelMonitor:
        return cls(config.build_detectors(), Combiner.parse(config.policy))

    def detector(self, name: str) -> Detector:
        return next(d for d in self.detectors if d.name == name)

    def process(self, batch: Batch) -> list[Assessment]:
        """Judge every sample of ``batch`` out of sample, then learn from it."""
        if len(batch) == 0:
            return []
        if self.dimension is None:
            self.dimension = batch.vectors.shape[1]
        elif batch.vectors.shape[1] != self.dimension:
            raise ValueError(f"vectors have dimension {batch.vectors.shape[1]}, this dataset has {self.dimension}")
        per_detector = {d.name: d.process_many(batch) for d in self.detectors}
        assessments = []
        for i in range(len(batch)):
            signals = {name: sigs[i] for name, sigs in per_detector.items()}
            assessments.append(Assessment(self.combiner.combine(signals), signals))
        return assessments
