"""Cross-fitted online models: streaming k-fold cross-validation with river."""

from __future__ import annotations

import numpy as np
import pandas as pd
from river import linear_model, multiclass, optim, preprocessing

from detectors.base import LabelIndex
from detectors.folds import fold_of
from detectors.model import RandomProjection


def default_fold_model(learning_rate: float = 0.1):
    """Standardised features into one-vs-rest logistic regression; both learn in mini-batches."""
    return preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
        linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate)))


class CrossFitModel:
    """``n_folds`` online river models; model *f* learns every sample except those of fold *f*.

    A sample's fold comes from a stable hash of its id, and it is always predicted by the model of
    its own fold, which has never learned it. So predictions stay out of sample even when a sample
    is re-scored long after it was learned: k-fold cross-validation in streaming form. Learning
    uses river's mini-batch ``learn_many``; rows of :meth:`predict_proba` sum to 1 (or are all zero
    before a model knows two classes).

    >>> classes = LabelIndex()
    >>> model = CrossFitModel(classes, n_folds=3)
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> x = np.where(y[:, None] == 1, 2.0, -2.0) + rng.normal(size=(300, 3))
    >>> model.learn(x, classes.encode([str(v) for v in y]), [str(i) for i in range(300)])
    >>> best = model.predict_proba(np.array([[2.0, 2.0, 2.0]]), ["new"]).argmax(axis=1)[0]
    >>> classes.labels[best]
    '1'
    """

    def __init__(self, classes: LabelIndex, *, n_folds: int = 5, max_features: int = 64,
                 learning_rate: float = 0.1, seed: int = 0):
        if n_folds < 2:
            raise ValueError("n_folds must be at least 2")
        self.classes = classes
        self.n_folds = n_folds
        self.max_features = max_features
        self.learning_rate = learning_rate
        self._projection = RandomProjection(max_features, seed=seed)
        self._models = [default_fold_model(learning_rate) for _ in range(n_folds)]
        self._known: list[set[int]] = [set() for _ in range(n_folds)]
        self._columns: list[str] | None = None

    def _frame(self, vectors: np.ndarray) -> pd.DataFrame:
        projected = self._projection.transform(np.asarray(vectors, dtype=np.float32))
        if self._columns is None:
            self._columns = [f"x{i}" for i in range(projected.shape[1])]
        return pd.DataFrame(projected, columns=self._columns)

    def learn(self, vectors: np.ndarray, label_ids: np.ndarray, ids) -> None:
        if len(vectors) == 0:
            return
        frame, folds = self._frame(vectors), fold_of(list(ids), self.n_folds)
        for f, model in enumerate(self._models):
            rows = np.flatnonzero(folds != f)
            if len(rows):
                model.learn_many(frame.iloc[rows].reset_index(drop=True), pd.Series(label_ids[rows]))
                self._known[f].update(label_ids[rows].tolist())

    def predict_proba(self, vectors: np.ndarray, ids) -> np.ndarray:
        out = np.zeros((len(vectors), len(self.classes)))
        if len(vectors) == 0:
            return out
        frame, folds = self._frame(vectors), fold_of(list(ids), self.n_folds)
        for f, model in enumerate(self._models):
            rows = np.flatnonzero(folds == f)
            if len(rows) == 0 or len(self._known[f]) < 2:
                continue
            proba = model.predict_proba_many(frame.iloc[rows].reset_index(drop=True))
            columns = [int(c) for c in proba.columns]
            out[np.ix_(rows, columns)] = proba.to_numpy(dtype=float)
        return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)
