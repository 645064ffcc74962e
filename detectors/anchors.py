"""The label noise of a stream, estimated from its most typical samples (anchor points).

Where classes overlap, a sample's out-of-sample probabilities are unsure however right its label
is, and counting samples that disagree with their label (cleanlab's confident joint) takes that
overlap for noise: tweets, 10% uniform noise, confident joint 0.44. The anchor-point estimate
(Liu & Tao 2016; Patrini et al. 2017) asks only where the model is surest: the samples that rank
highest for class *i* are of class *i*, whatever their label says, so the labels they carry are row
*i* of the noise's transition matrix, ``T[i, j] = P(labelled j | of class i)``. Only the ranking of
the probabilities matters, not their calibration, and the probabilities must be out of sample (the
sample's own label unseen), as confident learning's are.
"""

from __future__ import annotations

import math

import numpy as np


class AnchorNoise:
    """The transition matrix and error rate of the labels, over the recent learned samples: the last
    ``rows_per_class`` × the number of classes, and at least ``min_rows``. A recent window follows the
    stream, and its probabilities come from models that have learned more (on reviews, 10% noise, the
    whole stream's estimate was 0.25; the last 2,000 samples' 0.16).

    Each class's anchors are the ``top`` share of its labelled count that rank highest for it (at
    least ``min_anchors``; a class with fewer has no estimate). A class whose anchors are mostly
    labelled otherwise (``T[i, i] < 1/2``) has no typical samples the model can find: the
    probabilities do not know it yet, or its label is mostly given to other classes' samples (a
    rare class under uniform noise). Its rate cannot be told apart from the model's ignorance, so it
    is left out too, but only where the share is below 1/2 by more than a binomial standard deviation
    of its ``m`` anchors (``1/(2√m)``: below 0.39 at 20 anchors), so that sampling alone does not drop
    a class. The error rate weighs the other classes' flip-out rates ``1 - T[i, i]`` by the number of
    samples labelled *i*.

    >>> rng = np.random.default_rng(0)
    >>> truth = rng.integers(0, 2, 4000)
    >>> labels = np.where(rng.random(4000) < 0.1, 1 - truth, truth)            # 10% of labels flipped
    >>> score = truth + rng.normal(0, 0.5, 4000)                               # classes overlap
    >>> proba = np.column_stack([1 - score, score])                            # any ranking will do
    >>> estimate = AnchorNoise()
    >>> estimate.update(proba, labels)
    >>> round(estimate.error_rate(), 2), round(float((labels != truth)[-2000:].mean()), 2)  # estimated, true
    (0.09, 0.11)
    """

    def __init__(self, rows_per_class: int = 200, min_rows: int = 2000, top: float = 0.1, min_anchors: int = 20):
        self.rows_per_class, self.min_rows, self.top, self.min_anchors = rows_per_class, min_rows, top, min_anchors
        self._proba = np.zeros((0, 0), dtype=np.float32)
        self._labels = np.zeros(0, dtype=np.int64)
        self._rate: tuple[float | None] | None = None  # the estimate until the next update (budgets ask per flag)

    def __repr__(self) -> str:
        return f"AnchorNoise(top={self.top}, rows={len(self._labels)})"

    def update(self, proba: np.ndarray, label_ids: np.ndarray) -> None:
        """Remember out-of-sample ``proba`` (one row per sample, a column per class) and the labels given."""
        n_classes = max(proba.shape[1], self._proba.shape[1])
        kept = np.pad(self._proba, ((0, 0), (0, n_classes - self._proba.shape[1])))
        new = np.pad(np.asarray(proba, dtype=np.float32), ((0, 0), (0, n_classes - proba.shape[1])))
        window = max(self.min_rows, self.rows_per_class * n_classes)
        self._proba = np.vstack([kept, new])[-window:]
        self._labels = np.concatenate([self._labels, np.asarray(label_ids, dtype=np.int64)])[-window:]
        self._rate = None

    def transition(self) -> np.ndarray:
        """``T[i, j]``, the share labelled *j* among class *i*'s anchors; a row of NaN where class *i* has too few."""
        return self._transition()[0]

    def _transition(self) -> tuple[np.ndarray, np.ndarray]:
        """The transition matrix and each class's number of anchors (0: too few)."""
        n_rows, n_classes = self._proba.shape
        counts = np.bincount(self._labels, minlength=n_classes)
        out = np.full((n_classes, n_classes), np.nan)
        sizes = np.zeros(n_classes, dtype=np.int64)
        for i in range(n_classes):
            m = max(self.min_anchors, math.ceil(self.top * counts[i]))
            if counts[i] < self.min_anchors or m > n_rows:
                continue
            anchors = np.argpartition(-self._proba[:, i], m - 1)[:m]
            out[i], sizes[i] = np.bincount(self._labels[anchors], minlength=n_classes) / m, m
        return out, sizes

    def error_rate(self) -> float | None:
        """The estimated share of samples mislabelled (``None`` until some class has its anchors)."""
        if self._rate is None:
            self._rate = (self._error_rate(),)
        return self._rate[0]

    def _error_rate(self) -> float | None:
        transition, sizes = self._transition()
        kept = np.diag(transition)
        # mostly labelled otherwise, beyond a binomial standard deviation of its anchors (NaN: too few)
        known = kept + 0.5 / np.sqrt(np.maximum(sizes, 1)) >= 0.5
        if not known.any():
            return None
        labelled = np.bincount(self._labels, minlength=len(transition))[known]
        return float(np.dot(labelled, 1 - kept[known]) / labelled.sum())
