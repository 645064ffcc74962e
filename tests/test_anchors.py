"""The anchor estimate of the label noise (detectors/anchors.py): it holds where classes overlap,
where the confident joint takes the overlap for noise."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detectors.anchors import AnchorNoise
from detectors.noise import Calibration, NoiseBudget


def overlapping(n: int, noise: float, spread: float, seed: int = 0):
    """Two Gaussian classes in one dimension, their exact posteriors, and labels with ``noise`` flipped."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    x = np.where(truth == 1, 1.0, -1.0) + rng.normal(0, spread, n)
    p1 = 1 / (1 + np.exp(-2 * x / spread**2))
    labels = np.where(rng.random(n) < noise, 1 - truth, truth)
    return np.column_stack([1 - p1, p1]), labels, truth


@pytest.mark.parametrize("noise", [0.1, 0.2])
def test_the_anchor_estimate_holds_where_the_confident_joint_counts_the_overlap(noise):
    # the clean posteriors of heavily overlapping classes (a Bayes error of about 16%)
    proba, labels, truth = overlapping(6000, noise, spread=1.0)
    calibration = Calibration.fresh(min_count=5)
    for start in range(0, 6000, 500):
        calibration.learn(proba[start:start + 500], labels[start:start + 500])
    true_rate = (labels != truth)[-2000:].mean()  # (the estimate's window)
    joint, anchors = calibration.budget.calibrated_error_rate(), calibration.estimated_error_rate()
    assert joint > true_rate + 0.05  # the overlap, counted as noise
    assert anchors == pytest.approx(true_rate, abs=0.05) and abs(anchors - true_rate) < joint - true_rate
    assert calibration.estimated_error_rate() == calibration.budget.anchors.error_rate()


def test_a_class_whose_anchors_carry_other_labels_is_left_out():
    # class 2 is never the truth: every sample labelled 2 is noise, so nothing typical of it exists
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 3000)
    labels = np.where(rng.random(3000) < 0.1, 2, truth)
    proba = np.zeros((3000, 3))
    proba[np.arange(3000), truth] = rng.uniform(0.6, 1.0, 3000)
    proba[:, 2] = rng.uniform(0, 0.3, 3000)  # ranks samples of classes 0 and 1 alike
    proba /= proba.sum(axis=1, keepdims=True)
    estimate = AnchorNoise()
    estimate.update(proba, labels)
    kept = np.diag(estimate.transition())
    assert kept[2] < 0.5 <= min(kept[0], kept[1])
    # classes 0 and 1 lose a tenth of their samples to label 2; label 2's own samples count for nothing
    assert estimate.error_rate() == pytest.approx(0.1, abs=0.03)


def test_too_few_samples_give_no_estimate_and_the_confident_joint_stands_in():
    calibration = Calibration.fresh(min_count=1)
    calibration.learn(np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.9, 0.1]]), np.array([0, 0, 1, 1]))
    assert calibration.budget.anchors.error_rate() is None
    assert calibration.estimated_error_rate() == calibration.budget.calibrated_error_rate() == 0.25


def test_the_window_keeps_the_latest_samples_and_new_classes_widen_it():
    estimate = AnchorNoise(rows_per_class=10, min_rows=30)
    estimate.update(np.full((25, 2), 0.5), np.zeros(25, dtype=int))
    estimate.update(np.full((25, 3), 1 / 3), np.full(25, 2))
    assert estimate._proba.shape == (30, 3) and estimate._labels.tolist() == [0] * 5 + [2] * 25
    estimate.update(np.full((40, 4), 0.25), np.full(40, 3))  # four classes: 40 rows
    assert len(estimate._labels) == 40 and set(estimate._labels.tolist()) == {3}


def test_an_older_checkpoint_without_the_estimate_gets_a_fresh_one():
    budget = NoiseBudget(capacity=10, min_count=1)
    state = budget.__dict__.copy()
    del state["anchors"]
    restored = NoiseBudget.__new__(NoiseBudget)
    restored.__setstate__(state)
    assert isinstance(restored.anchors, AnchorNoise) and restored.anchors.error_rate() is None
    assert pickle.loads(pickle.dumps(restored)).anchors.error_rate() is None
