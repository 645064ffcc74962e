"""Cross-fitted linear discriminant analysis: a converged, out-of-sample model in closed form.

One SGD pass over a stream is far from a converged model; refitting a logistic regression on a
window every step is converged but slow. Linear discriminant analysis with a shrunk covariance
needs only running sums (per class: count and sum; overall: the scatter matrix), so each learning
step updates it in one matrix product and it is always exactly fitted to everything learned. On
sentence embeddings it separates classes as well as cross-validated logistic regression or better
(docs/detection.md), at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from detectors.base import LabelIndex
from detectors.folds import fold_of
from detectors.threads import map_in_parallel

SHRINKAGES = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9)
"""Candidate shrinkages of the correlation matrix toward the identity; the data picks one."""


class _Sums:
    """Count, per-class sums and scatter of the samples of one fold."""

    def __init__(self, dim: int) -> None:
        self.counts = np.zeros(0)
        self.sums = np.zeros((0, dim))
        self.scatter = np.zeros((dim, dim))
        self.total = np.zeros(dim)

    def grow(self, n_classes: int) -> None:
        if len(self.counts) < n_classes:
            extra = n_classes - len(self.counts)
            self.counts = np.concatenate([self.counts, np.zeros(extra)])
            self.sums = np.vstack([self.sums, np.zeros((extra, self.sums.shape[1]))])

    def add(self, x: np.ndarray, label_ids: np.ndarray, n_classes: int) -> None:
        self.grow(n_classes)
        np.add.at(self.counts, label_ids, 1)
        np.add.at(self.sums, label_ids, x)
        self.scatter += x.T @ x
        self.total += x.sum(axis=0)


class FoldLDA:
    """``n_folds`` shrinkage LDA models; model *f* has learned every sample except those of fold *f*.

    A sample's fold comes from a stable hash of its id (:func:`~detectors.folds.fold_of`), and it
    is always predicted by the model of its own fold, which has never learned it: k-fold
    cross-validation in streaming form. So its probabilities stay out of sample when it is
    re-scored long after it was learned.
    The shrinkage is chosen by the data: before a step is learned, its samples (out of sample for
    every model) score each candidate by log loss, and the running best is used. That takes an
    eigendecomposition per fold and step; predictions need one Cholesky solve per fold and step.

    >>> classes = LabelIndex()
    >>> model = FoldLDA(classes, n_folds=3)
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> x = np.where(y[:, None] == 1, 1.0, -1.0) + rng.normal(size=(300, 3))
    >>> model.learn(x, classes.encode([str(v) for v in y]), [str(i) for i in range(300)])
    >>> p = model.predict_proba(np.array([[1.0, 1.0, 1.0]]), ["new"])
    >>> classes.labels[int(p.argmax())], bool(p.max() > 0.9)
    ('1', True)
    """

    def __init__(self, classes: LabelIndex, *, n_folds: int = 5, decay: float = 0.9):
        if n_folds < 2:
            raise ValueError("n_folds must be at least 2")
        self.classes = classes
        self.n_folds = n_folds
        self.decay = decay
        self._folds: list[_Sums] | None = None
        self._losses = np.zeros(len(SHRINKAGES))
        self.shrinkage = 0.2
        self._fitted: list | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fitted"] = None  # a cache, rebuilt on use
        return state

    @property
    def n_learned(self) -> int:
        return 0 if self._folds is None else int(sum(s.counts.sum() for s in self._folds))

    def learn(self, vectors: np.ndarray, label_ids: np.ndarray, ids) -> None:
        if len(vectors) == 0:
            return
        x = np.asarray(vectors, dtype=np.float64)
        if self._folds is None:
            self._folds = [_Sums(x.shape[1]) for _ in range(self.n_folds)]
        self._choose_shrinkage(x, label_ids, ids)
        folds = fold_of(list(ids), self.n_folds)
        for f, sums in enumerate(self._folds):
            rows = folds == f
            if rows.any():
                sums.add(x[rows], label_ids[rows], len(self.classes))
        self._fitted = None

    def _choose_shrinkage(self, x: np.ndarray, label_ids: np.ndarray, ids) -> None:
        """Score every candidate shrinkage on the step's samples, out of sample for every fold model, each
        by its own fold's (one eigendecomposition per fold gives every candidate); keep the best so far."""
        if self.n_learned < 2 * len(self.classes) + 2:
            return
        whole = _pooled(self._folds, len(self.classes))
        parts = [_discriminant(whole.counts - f.counts, whole.sums - f.sums, whole.scatter - f.scatter)
                 for f in self._folds]
        decompositions = iter(map_in_parallel(np.linalg.eigh, [part[4] for part in parts if part is not None]))
        losses = np.zeros(len(SHRINKAGES))
        folds = fold_of(list(ids), self.n_folds)
        for f, part in enumerate(parts):
            if part is None:
                continue
            values, vectors = next(decompositions)
            rows = np.flatnonzero(folds == f)
            if not len(rows):
                continue
            present, means, log_priors, scale, _ = part
            values = np.maximum(values, 0.0)
            projected_means, projected = (means / scale) @ vectors, (x[rows] / scale) @ vectors
            for c, shrinkage in enumerate(SHRINKAGES):
                # discriminants with the shrunk correlation (1 - a) R + a I, in R's eigenbasis
                root = np.sqrt((1 - shrinkage) * values + shrinkage)
                whitened_means, whitened = projected_means / root, projected / root
                logits = whitened @ whitened_means.T - 0.5 * (whitened_means ** 2).sum(axis=1) + log_priors
                proba = np.zeros((len(rows), len(self.classes)))
                proba[:, np.flatnonzero(present)] = _softmax(logits)
                losses[c] += self._log_loss(proba, label_ids[rows])
        self._losses = self.decay * self._losses + losses
        self.shrinkage = SHRINKAGES[int(np.argmin(self._losses))]

    @staticmethod
    def _log_loss(proba: np.ndarray, label_ids: np.ndarray) -> float:
        known = label_ids < proba.shape[1]
        p = proba[np.flatnonzero(known), label_ids[known]]
        return float(-np.log(np.clip(p, 1e-6, 1.0)).sum())

    def _fit(self) -> list:
        """Per fold (``None`` before it knows two classes): the classes present, and the linear
        discriminant at the chosen shrinkage, ``logits = x @ weights + offsets``: one Cholesky solve
        of the shrunk correlation against the class means, the folds side by side."""
        whole = _pooled(self._folds, len(self.classes))
        parts = [_discriminant(whole.counts - f.counts, whole.sums - f.sums, whole.scatter - f.scatter)
                 for f in self._folds]
        shrinkage = self.shrinkage
        solved = iter(map_in_parallel(lambda part: _linear(part, shrinkage), [part for part in parts if part is not None]))
        return [None if part is None else next(solved) for part in parts]

    def _proba(self, x: np.ndarray, ids) -> np.ndarray:
        if self._fitted is None:
            self._fitted = self._fit()
        out = np.zeros((len(x), len(self.classes)))
        folds = fold_of(list(ids), self.n_folds)
        for f, model in enumerate(self._fitted):
            rows = np.flatnonzero(folds == f)
            if model is None or len(rows) == 0:
                continue
            present, weights, offsets = model
            out[np.ix_(rows, np.flatnonzero(present))] = _softmax(x[rows] @ weights + offsets)
        return out

    def predict_proba(self, vectors: np.ndarray, ids) -> np.ndarray:
        """Rows sum to 1, or are all zero before the sample's fold model knows two classes."""
        if self._folds is None or len(vectors) == 0:
            return np.zeros((len(vectors), len(self.classes)))
        return self._proba(np.asarray(vectors, dtype=np.float64), ids)


def _pooled(folds: list[_Sums], n_classes: int) -> _Sums:
    """The sums of every fold together."""
    whole = _Sums(folds[0].scatter.shape[0])
    whole.grow(n_classes)
    for sums in folds:
        sums.grow(n_classes)
        whole.counts += sums.counts
        whole.sums += sums.sums
        whole.scatter += sums.scatter
    return whole


def _discriminant(counts: np.ndarray, sums: np.ndarray, scatter: np.ndarray):
    """From a model's sums: the classes present, their means, log priors, the features' scale and the
    pooled within-class correlation; ``None`` with fewer than two classes (or no degree of freedom)."""
    present = counts > 0
    if present.sum() < 2 or counts.sum() <= present.sum():
        return None
    means = sums[present] / counts[present, None]
    within = scatter - (means.T * counts[present]) @ means
    cov = within / (counts.sum() - present.sum())
    scale = np.sqrt(np.maximum(np.diag(cov), 1e-12))
    return present, means, np.log(counts[present] / counts.sum()), scale, cov / np.outer(scale, scale)


def _linear(part, shrinkage: float):
    """The linear discriminant of a model (:func:`_discriminant`) at a ``shrinkage`` of its correlation R
    toward the identity, ``(present, weights, offsets)`` with ``logits = x @ weights + offsets``: one
    Cholesky solve of ``(1 - a) R + a I`` against the scaled class means."""
    present, means, log_priors, scale, correlation = part
    shrunk = (1 - shrinkage) * correlation
    shrunk[np.diag_indices_from(shrunk)] += shrinkage
    scaled = means / scale
    solved = cho_solve(cho_factor(shrunk, lower=True, check_finite=False), scaled.T, check_finite=False)
    return present, solved / scale[:, None], log_priors - 0.5 * (scaled * solved.T).sum(axis=1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)
