"""The cross-fitted LDA: each fold's model is the shrunk-correlation LDA of the other folds, solved exactly."""

from __future__ import annotations

import numpy as np

from detectors import FoldLDA, LabelIndex
from detectors.folds import fold_of


def stream(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 6)) + np.eye(3, 6)[y] * 2.0
    return x, y, [f"s{seed}-{i}" for i in range(n)]


def explicit_lda(x, y, query, shrinkage):
    """Textbook LDA with the pooled within-class correlation shrunk toward I, by a plain linear solve."""
    classes = np.unique(y)
    means = np.array([x[y == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / (len(x) - len(classes))
    scale = np.sqrt(np.diag(cov))
    shrunk = (1 - shrinkage) * cov / np.outer(scale, scale) + shrinkage * np.eye(len(scale))
    w = np.linalg.solve(shrunk, (means / scale).T)
    logits = (query / scale) @ w - 0.5 * ((means / scale) * w.T).sum(axis=1) + np.log(np.bincount(y) / len(y))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def test_each_fold_model_is_the_shrunk_lda_of_every_other_fold():
    x, y, ids = stream(600)
    classes = LabelIndex()
    model = FoldLDA(classes, n_folds=3)
    y = classes.encode([str(v) for v in y])  # label ids in the order labels first appear
    model.learn(x, y, ids)
    queries, _, query_ids = stream(30, seed=1)
    got = model.predict_proba(queries, query_ids)
    folds, learned = fold_of(query_ids, 3), fold_of(ids, 3)
    for f in range(3):
        rows = folds == f
        want = explicit_lda(x[learned != f], y[learned != f], queries[rows], model.shrinkage)
        np.testing.assert_allclose(got[rows], want, rtol=1e-9, atol=1e-12)
