"""The numpy fold models of CrossFitModel compute what river's mini-batch pipeline computes.

The reference is river itself, ``StandardScaler() | OneVsRestClassifier(LogisticRegression(
optimizer=SGD(0.1)))`` fed with DataFrames, exactly as CrossFitModel used it before.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from river import linear_model, multiclass, optim, preprocessing

from detectors.base import LabelIndex
from detectors.crossfit import CrossFitModel
from detectors.folds import fold_of


class RiverCrossFit(CrossFitModel):
    """CrossFitModel with river's own fold models (the reference)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._river = [preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
            linear_model.LogisticRegression(optimizer=optim.SGD(self.learning_rate))) for _ in range(self.n_folds)]
        self._known = [set() for _ in range(self.n_folds)]

    def _frame(self, vectors):
        projected = self._features(vectors)
        return pd.DataFrame(projected, columns=[f"x{i}" for i in range(projected.shape[1])])

    def learn(self, vectors, label_ids, ids):
        frame, folds = self._frame(vectors), fold_of(list(ids), self.n_folds)
        for f, model in enumerate(self._river):
            rows = np.flatnonzero(folds != f)
            if len(rows):
                model.learn_many(frame.iloc[rows].reset_index(drop=True), pd.Series(label_ids[rows]))
                self._known[f].update(label_ids[rows].tolist())

    def predict_proba(self, vectors, ids):
        out = np.zeros((len(vectors), len(self.classes)))
        frame, folds = self._frame(vectors), fold_of(list(ids), self.n_folds)
        for f, model in enumerate(self._river):
            rows = np.flatnonzero(folds == f)
            if len(rows) == 0 or len(self._known[f]) < 2:
                continue
            proba = model.predict_proba_many(frame.iloc[rows].reset_index(drop=True))
            out[np.ix_(rows, [int(c) for c in proba.columns])] = proba.to_numpy(dtype=float)
        return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)


@pytest.mark.parametrize(("dim", "max_features"), [(12, 64), (100, 24)])
def test_numpy_fold_models_match_river(dim, max_features):
    rng = np.random.default_rng(dim)
    centers = rng.normal(scale=2.0, size=(6, dim))
    ours_classes, river_classes = LabelIndex(), LabelIndex()
    ours = CrossFitModel(ours_classes, n_folds=5, max_features=max_features, seed=1)
    reference = RiverCrossFit(river_classes, n_folds=5, max_features=max_features, seed=1)
    for step in range(12):
        n_classes = 3 if step < 4 else 6  # classes that appear mid-stream
        truth = rng.integers(0, n_classes, 150)
        vectors = (centers[truth] + rng.normal(size=(150, dim))).astype(np.float32)
        labels = [f"c{t}" for t in truth]
        ids = [f"s{step}-{i}" for i in range(150)]
        expected = reference.predict_proba(vectors, ids)
        np.testing.assert_allclose(ours.predict_proba(vectors, ids), expected, rtol=1e-12, atol=1e-15)
        ours.learn(vectors, ours_classes.encode(labels), ids)
        reference.learn(vectors, river_classes.encode(labels), ids)
    assert expected.sum() > 0, "the models must have been predicting, or the comparison proves nothing"
