"""Per-annotator label quality, estimated online, with drift detection.

Each judged sample brings one piece of evidence about its annotator: whether the out-of-sample
evidence disagrees with the label it gave. An annotator's **estimated error rate** is the mean of
a Beta posterior whose prior is the rate of all annotators together, worth ``prior_strength``
samples. So an annotator with three samples stays close to the crowd until their own record says
otherwise, and the 95% credible interval says how sure the estimate is.

A shift in an annotator's disagreement rate is detected with river's ADWIN: an event names the
annotator, the rate before and after.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from river.drift import ADWIN
from scipy.stats import beta


@dataclass
class AnnotatorRecord:
    """What is known about one annotator."""

    n: int = 0
    disagreements: float = 0.0
    flagged: int = 0
    drifts: int = 0
    adwin: ADWIN = field(default_factory=lambda: ADWIN(delta=0.002))


@dataclass(frozen=True)
class AnnotatorShift:
    """ADWIN found that an annotator's disagreement rate changed."""

    annotator_id: str
    rate_before: float
    rate_after: float
    n: int

    @property
    def worse(self) -> bool:
        return self.rate_after > self.rate_before


class AnnotatorQuality:
    """Online error-rate estimates per annotator.

    >>> quality = AnnotatorQuality(prior_strength=10)
    >>> for i in range(200):
    ...     _ = quality.update("careful", disagrees=(i % 20 == 0))
    ...     _ = quality.update("sloppy", disagrees=(i % 2 == 0))
    >>> [(row["annotator_id"], round(row["estimated_error_rate"], 2)) for row in quality.report()]
    [('sloppy', 0.49), ('careful', 0.06)]
    """

    def __init__(self, *, prior_strength: float = 20.0, credibility: float = 0.95, max_annotators: int = 10_000):
        self.prior_strength = prior_strength
        self.credibility = credibility
        self.max_annotators = max_annotators  # beyond, the longest-silent annotator is forgotten
        self.annotators: OrderedDict[str, AnnotatorRecord] = OrderedDict()
        self.n = 0
        self.disagreements = 0.0

    def update(self, annotator_id: str, *, disagrees: bool, flagged: bool = False) -> AnnotatorShift | None:
        """Record one judged sample; returns a shift when ADWIN detects one in this annotator's rate."""
        record = self.annotators.setdefault(annotator_id, AnnotatorRecord())
        self.annotators.move_to_end(annotator_id)
        while len(self.annotators) > self.max_annotators:
            self.annotators.popitem(last=False)
        record.n += 1
        record.disagreements += float(disagrees)
        record.flagged += int(flagged)
        self.n += 1
        self.disagreements += float(disagrees)
        before = record.adwin.estimation
        record.adwin.update(float(disagrees))
        if record.adwin.drift_detected:
            record.drifts += 1
            return AnnotatorShift(annotator_id, float(before), float(record.adwin.estimation), record.n)
        return None

    def flag_later(self, annotator_id: str) -> None:
        """A re-audit flagged one of the annotator's samples after its first verdict."""
        if annotator_id in self.annotators:
            self.annotators[annotator_id].flagged += 1

    @property
    def crowd_rate(self) -> float:
        """Disagreement rate of all annotators together (0.05 before any evidence)."""
        return self.disagreements / self.n if self.n else 0.05

    def error_rate(self, annotator_id: str) -> float:
        """The posterior mean alone (the crowd rate for an unknown annotator): cheap, for weighting votes."""
        record = self.annotators.get(annotator_id)
        prior_a = self.prior_strength * self.crowd_rate
        if record is None:
            return prior_a / self.prior_strength
        return (prior_a + record.disagreements) / (self.prior_strength + record.n)

    def estimate(self, annotator_id: str) -> dict:
        """The annotator's posterior: estimated error rate, credible interval, and counts."""
        record = self.annotators[annotator_id]
        prior_a = self.prior_strength * self.crowd_rate
        prior_b = self.prior_strength - prior_a
        a, b = prior_a + record.disagreements, prior_b + record.n - record.disagreements
        tail = (1 - self.credibility) / 2
        low, high = beta.ppf([tail, 1 - tail], a, b)
        return {"annotator_id": annotator_id, "n": record.n, "estimated_error_rate": float(a / (a + b)),
                "interval": [round(float(low), 4), round(float(high), 4)], "credibility": self.credibility,
                "flagged": record.flagged, "flag_rate": record.flagged / record.n, "drifts": record.drifts,
                "recent_disagreement_rate": round(float(record.adwin.estimation), 4)}

    def report(self, top: int | None = None) -> list[dict]:
        """Every annotator, worst estimated error rate first (ties: more evidence first)."""
        rows = [self.estimate(annotator) for annotator in list(self.annotators)]  # a snapshot: readers may be threads
        rows.sort(key=lambda row: (-row["estimated_error_rate"], -row["n"], row["annotator_id"]))
        return rows[:top] if top is not None else rows
