"""What the monitor says of a sample: the combined verdict with every signal behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from detectors.base import Signal
from detectors.cluster import ClusterDisagreement


@dataclass(frozen=True, slots=True)
class SampleContext:
    """What a reviewer sees next to a flagged sample, taken when it was judged: the label counts of
    its cluster (largest first) and its nearest earlier samples as ``(sample_id, label, similarity)``."""

    cluster_labels: dict[str, int] = field(default_factory=dict)
    neighbors: tuple[tuple[str, str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Assessment:
    """The combined verdict on one sample, with every detector's own signal, and for a flagged
    sample the context a reviewer sees (:class:`SampleContext`)."""

    verdict: Signal
    signals: dict[str, Signal]
    context: SampleContext | None = None

    def __getstate__(self) -> tuple:
        return self.verdict, self.signals, self.context

    def __setstate__(self, state) -> None:
        # checkpoints written before the context hold (verdict, signals)
        verdict, signals, *rest = state
        object.__setattr__(self, "verdict", verdict)
        object.__setattr__(self, "signals", signals)
        object.__setattr__(self, "context", rest[0] if rest else None)

    def withdrawn(self, **why) -> Assessment:
        """This assessment with its flag withdrawn: same score and signals, the reason in the verdict's details.

        >>> Assessment(Signal(0.9, True, "b"), {}).withdrawn(over_budget=3.0).verdict
        Signal(score=0.9, flagged=False, suggested_label=None, details={'over_budget': 3.0})
        """
        verdict = self.verdict
        return Assessment(Signal(verdict.score, False, None, {**verdict.details, **why}), self.signals)

    @property
    def cluster_id(self) -> int | None:
        cluster = self.signals.get(ClusterDisagreement.name)
        return cluster.details.get("cluster_id") if cluster else None

    @property
    def disagrees(self) -> bool | None:
        """Whether the out-of-sample evidence prefers another label than the given one.

        Read from the first detector that reports both probabilities (confident learning, then the
        online model, then the neighbours); ``None`` while none has evidence yet.

        >>> Assessment(Signal(0.8, True), {"confident": Signal(0.8, True, "b", {"p_label": 0.2, "p_suggested": 0.7})}).disagrees
        True
        """
        for name in ("confident", "model", "neighbors"):
            signal = self.signals.get(name)
            if signal is None or signal.details.get("warming_up"):
                continue
            details = signal.details
            if "p_label" in details and "p_suggested" in details:
                return details["p_suggested"] > details["p_label"]
            if "p_label" in details and "p_predicted" in details:
                return details.get("predicted") is not None and details["p_predicted"] > details["p_label"]
        return None


P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class LateVerdict(Generic[P]):
    """A re-audit's verdict on a sample judged before: ``sample_id``, the new assessment, and the
    payload the caller gave with the sample (returned as given, of the caller's type ``P``)."""

    sample_id: str
    payload: P
    assessment: Assessment
