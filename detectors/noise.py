"""The building blocks of streaming confident learning, each usable alone.

Per-class thresholds kept online (:class:`ClassThresholds`), cleanlab's confident-joint rule
(:func:`confident_disagreement`), its noise-rate budget (:class:`NoiseBudget`, ranked by
:func:`label_margin`), and the data-chosen share of neighbours and model in the blend
(:class:`SourceMix`, scored by :func:`mean_auc`); :class:`Calibration` teaches thresholds and budget
together, and :func:`batch_label_issues` runs cleanlab's ``find_label_issues`` over a whole window.
:class:`~detectors.confident.ConfidentLearning` puts them together.
"""

from __future__ import annotations

import numpy as np
from cleanlab.filter import find_label_issues
from scipy.stats import rankdata

from detectors.anchors import AnchorNoise


class ClassThresholds:
    """cleanlab's per-class thresholds, kept online.

    The threshold of class *j* is the mean out-of-sample probability of *j* among samples labelled
    *j*. A class with fewer than ``min_count`` such samples has no threshold yet (infinity).

    >>> t = ClassThresholds(min_count=1)
    >>> t.update(np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]), np.array([0, 0, 1]))
    >>> t.values(2).round(2).tolist()
    [0.7, 0.7]
    """

    def __init__(self, min_count: int = 5):
        self.min_count = min_count
        self._sums = np.zeros(0)
        self._counts = np.zeros(0)

    def _grow(self, n_classes: int) -> None:
        if len(self._sums) < n_classes:
            extra = n_classes - len(self._sums)
            self._sums = np.concatenate([self._sums, np.zeros(extra)])
            self._counts = np.concatenate([self._counts, np.zeros(extra)])

    def update(self, proba: np.ndarray, label_ids: np.ndarray) -> None:
        """Absorb the out-of-sample probabilities of freshly labelled samples (rows without evidence skipped)."""
        self._grow(proba.shape[1])
        has_evidence = proba.sum(axis=1) > 0
        rows = np.flatnonzero(has_evidence)
        np.add.at(self._sums, label_ids[rows], proba[rows, label_ids[rows]])
        np.add.at(self._counts, label_ids[rows], 1)

    def values(self, n_classes: int) -> np.ndarray:
        self._grow(n_classes)
        ready = self._counts[:n_classes] >= self.min_count
        return np.where(ready, self._sums[:n_classes] / np.maximum(self._counts[:n_classes], 1), np.inf)

    @staticmethod
    def fit(proba: np.ndarray, label_ids: np.ndarray, min_count: int = 1) -> np.ndarray:
        """Batch thresholds over a whole window, as cleanlab computes them."""
        fresh = ClassThresholds(min_count)
        fresh.update(proba, label_ids)
        return fresh.values(proba.shape[1])


class NoiseBudget:
    """cleanlab's ``prune_by_noise_rate``, online: flag no more of a label's samples than its noise rate.

    For each label it counts how many of its samples the confident-learning rule flags (the
    off-diagonal of the confident joint, so the estimated noise rate of that label) and keeps a
    seeded reservoir of recent margins (:func:`label_margin`: the best other class's probability
    minus the given label's). A sample is within budget when its margin is among the highest
    ``noise rate`` share of its label's. The margin is cleanlab's default ranking; self-confidence
    (``prune_by_class``) ranks worse where classes overlap: a sample
    that is unsure of every class has a low self-confidence but a small margin, and is rarely
    mislabelled (tweets, 20% uniform noise: precision while streaming 0.339 ranked by
    self-confidence, 0.424 by margin; ``bench/quality.py``, docs/detection.md).

    >>> budget = NoiseBudget(capacity=100, min_count=1)
    >>> budget.update(np.linspace(-1, 1, 10), np.zeros(10, dtype=int), np.arange(10) >= 8)
    >>> budget.within(np.array([0.95, 0.0]), np.array([0, 0])).tolist()
    [True, False]
    """

    def __init__(self, capacity: int = 1000, min_count: int = 5, seed: int = 0):
        self.capacity = capacity
        self.min_count = min_count
        self._rng = np.random.default_rng(seed)
        self._reservoirs: dict[int, list[float]] = {}
        self._seen: dict[int, int] = {}
        self._issues: dict[int, int] = {}
        self._in_joint: dict[int, int] = {}
        self.ranks_by = "margin"
        self.anchors = AnchorNoise()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if state.get("ranks_by") != "margin":  # (older checkpoints kept self-confidences: they start over)
            self._reservoirs, self.ranks_by = {}, "margin"
        if "_in_joint" not in state:  # (nor did they count the confident joint's rows: every sample counts)
            self._in_joint = dict(self._seen)
        if "anchors" not in state:  # (nor kept probabilities for the anchor estimate: it starts now)
            self.anchors = AnchorNoise()

    def update(self, margins: np.ndarray, label_ids: np.ndarray, rule_flags: np.ndarray,
               in_joint: np.ndarray | None = None) -> None:
        in_joint = np.ones(len(label_ids), dtype=bool) if in_joint is None else in_joint
        for m, label, flagged, counted in zip(margins.tolist(), label_ids.tolist(), rule_flags.tolist(),
                                              in_joint.tolist()):
            self._in_joint[label] = self._in_joint.get(label, 0) + int(counted)
            seen = self._seen.get(label, 0)
            reservoir = self._reservoirs.setdefault(label, [])
            if len(reservoir) < self.capacity:
                reservoir.append(m)
            else:
                slot = int(self._rng.integers(0, seen + 1))
                if slot < self.capacity:
                    reservoir[slot] = m
            self._seen[label] = seen + 1
            self._issues[label] = self._issues.get(label, 0) + int(flagged)

    def noise_rate(self, label: int) -> float:
        return self._issues.get(label, 0) / max(self._seen.get(label, 0), 1)

    def error_rate(self) -> float:
        """Issues over samples, all labels together."""
        return sum(self._issues.values()) / max(sum(self._seen.values()), 1)

    def calibrated_error_rate(self) -> float:
        """The share of samples mislabelled by cleanlab's calibrated confident joint: each label's row
        rescaled from the samples that entered the joint (cleared some class's threshold) to all of
        the label's samples, so a label's estimate is its issues over its samples in the joint."""
        seen = sum(self._seen.values())
        issues = sum(self._issues.get(label, 0) * n / max(self._in_joint.get(label, 0), 1)
                     for label, n in self._seen.items())
        return min(issues / max(seen, 1), 1.0)

    def within(self, margins: np.ndarray, label_ids: np.ndarray, share: float = 1.0) -> np.ndarray:
        """Whether each sample is among the highest ``share`` × noise-rate margins of its label."""
        return margins >= self.cutoffs(label_ids, share)

    def cutoffs(self, label_ids: np.ndarray, share: float = 1.0) -> np.ndarray:
        """The margin each sample needs to be :meth:`within` budget (infinite for a label with fewer than
        ``min_count`` margins kept).

        >>> budget = NoiseBudget(capacity=100, min_count=1)
        >>> budget.update(np.linspace(-1, 1, 10), np.zeros(10, dtype=int), np.arange(10) >= 8)
        >>> budget.cutoffs(np.array([0, 1])).round(3).tolist()
        [0.6, inf]
        """
        out = np.full(len(label_ids), np.inf)
        for label in np.unique(label_ids).tolist():
            reservoir = self._reservoirs.get(label, [])
            if len(reservoir) >= self.min_count:
                out[label_ids == label] = np.quantile(np.asarray(reservoir),
                                                      1.0 - min(share * self.noise_rate(label), 1.0))
        return out


class Calibration:
    """What confident learning learns from out-of-sample probabilities: the per-class thresholds and
    the noise budget, taught together.

    >>> calibration = Calibration.fresh(min_count=1)
    >>> calibration.learn(np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.9, 0.1]]), np.array([0, 0, 1, 1]))
    >>> calibration.thresholds.values(2).round(2).tolist(), calibration.estimated_error_rate()
    ([0.85, 0.5], 0.25)
    """

    def __init__(self, thresholds: ClassThresholds, budget: NoiseBudget):
        self.thresholds = thresholds
        self.budget = budget

    @classmethod
    def fresh(cls, min_count: int = 5, capacity: int = 1000, seed: int = 0) -> Calibration:
        return cls(ClassThresholds(min_count), NoiseBudget(capacity, min_count, seed=seed))

    def learn(self, proba: np.ndarray, label_ids: np.ndarray, has_evidence: np.ndarray | None = None,
              annotated_ids: np.ndarray | None = None) -> None:
        """Teach both the rows ``has_evidence`` marks (default: every row with some probability).

        The anchor estimate learns the labels as annotated (``annotated_ids``, -1 for a reviewer's copy
        of a sample; default: ``label_ids``): it estimates how many labels the annotators got wrong, and
        reviewers' corrections, picked because the evidence was clear, would make their classes look clean."""
        if has_evidence is None:
            has_evidence = proba.sum(axis=1) > 0
        annotated_ids = label_ids if annotated_ids is None else annotated_ids
        stream = has_evidence & (annotated_ids >= 0)
        self.budget.anchors.update(proba[stream], annotated_ids[stream])
        proba, label_ids = proba[has_evidence], label_ids[has_evidence]
        self.thresholds.update(proba, label_ids)
        thresholds = self.thresholds.values(proba.shape[1])
        rule, _ = confident_disagreement(proba, label_ids, thresholds)
        counted = (proba >= thresholds[None, :]).any(axis=1)  # in the confident joint
        self.budget.update(label_margin(proba, label_ids), label_ids, rule, counted)

    def estimated_error_rate(self) -> float:
        """The share of samples mislabelled: the anchor estimate (:class:`~detectors.anchors.AnchorNoise`),
        and until it has one, the calibrated confident joint (:meth:`NoiseBudget.calibrated_error_rate`),
        which takes overlapping classes for noise (tweets, 10% noise: 0.48, where the anchors say 0.16)."""
        rate = self.budget.anchors.error_rate()
        return self.budget.calibrated_error_rate() if rate is None else rate


def label_margin(proba: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """The most probable other class's probability minus the given label's (cleanlab's normalized margin, unscaled).

    >>> label_margin(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]), np.array([0, 1])).round(2).tolist()
    [-0.5, 0.3]
    """
    rows = np.arange(len(proba))
    others = proba.copy()
    others[rows, label_ids] = -np.inf
    return others.max(axis=1) - proba[rows, label_ids] if proba.shape[1] > 1 else -proba[rows, label_ids]


class SourceMix:
    """How much the neighbour vote and the model each count, chosen by the data.

    Each learning step, before its samples are learned, their out-of-sample probabilities from
    both sources are blended at every candidate share, and each share is scored by how well the
    blend ranks the given labels: the mean one-vs-rest AUC over the classes (decayed, so the choice
    follows the stream). A ranking score, not a proper scoring rule: label noise makes log loss and
    Brier prefer a flatter blend, while finding label errors needs the blend that ranks best (on
    reviews, log loss and Brier chose half and half, and the flags lost a sixth of their F1).
    On sentence embeddings the model wins; on small tabular features the two share.

    >>> mix = SourceMix()
    >>> neighbors = np.array([[0.4, 0.6], [0.6, 0.4], [0.7, 0.3]]); model = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    >>> mix.update(neighbors, model, np.array([0, 1, 1]))
    >>> mix.model_share  # (ties go to the larger model share)
    1.0
    """

    SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)

    def __init__(self, decay: float = 0.9):
        self.decay = decay
        self._scores = np.zeros(len(self.SHARES))
        self.model_share = 0.5

    def update(self, neighbors: np.ndarray | None, model: np.ndarray | None, label_ids: np.ndarray) -> None:
        if neighbors is None or model is None:
            return
        rows = np.flatnonzero((neighbors.sum(axis=1) > 0) & (model.sum(axis=1) > 0))
        if len(rows) < 2:
            return
        labels = label_ids[rows]
        scores = [mean_auc((1 - s) * neighbors[rows] + s * model[rows], labels) for s in self.SHARES]
        self._scores = self.decay * self._scores + np.array(scores)
        best = np.flatnonzero(self._scores >= self._scores.max() - 1e-3)  # near ties: the larger model share
        self.model_share = self.SHARES[int(best[-1])]


def mean_auc(proba: np.ndarray, label_ids: np.ndarray) -> float:
    """Mean over the labels present (and absent somewhere) of the AUC of their probability column.

    >>> mean_auc(np.array([[0.9, 0.1], [0.2, 0.8], [0.95, 0.05]]), np.array([0, 1, 1]))
    0.5
    """
    aucs = []
    for label in np.unique(label_ids).tolist():
        positive = label_ids == label
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos and n_neg:
            ranks = rankdata(proba[:, label])
            aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else 0.5


def confident_disagreement(proba: np.ndarray, label_ids: np.ndarray, thresholds: np.ndarray):
    """cleanlab's confident-joint rule: among classes whose probability clears their threshold,
    the most probable one is not the given label. Returns (flags, that class).

    >>> flags, best = confident_disagreement(np.array([[0.2, 0.8], [0.9, 0.1]]), np.array([0, 0]), np.array([0.6, 0.6]))
    >>> flags.tolist(), best.tolist()
    ([True, False], [1, 0])
    """
    above = proba >= thresholds[None, :]
    best = np.where(above, proba, -1.0).argmax(axis=1)
    return above.any(axis=1) & (best != label_ids), best


def batch_label_issues(proba: np.ndarray, label_ids: np.ndarray) -> np.ndarray | None:
    """cleanlab's own ``find_label_issues`` over a whole window (``None`` where it cannot run)."""
    has_evidence = proba.sum(axis=1) > 0
    rows = np.flatnonzero(has_evidence)
    present = np.unique(label_ids[rows])
    if len(rows) < 10 or len(present) < 2:
        return None
    # cleanlab wants consecutive classes that all occur among the labels
    remap = {old: new for new, old in enumerate(present.tolist())}
    kept = rows[np.isin(label_ids[rows], present)]
    sub = proba[np.ix_(kept, present)]
    sub = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1e-12)
    labels = np.array([remap[v] for v in label_ids[kept].tolist()])
    try:
        issues = find_label_issues(labels, sub, n_jobs=1)
    except (ValueError, AssertionError):
        return None
    flags = np.zeros(len(proba), dtype=bool)
    flags[kept] = issues
    return flags
