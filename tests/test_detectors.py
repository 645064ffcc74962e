"""Targeted behaviour of each detector, the combiner and the per-dataset monitor."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import (
    Batch,
    ClusterDisagreement,
    Combiner,
    LabelMonitor,
    ModelDisagreement,
    MonitorConfig,
    RandomProjection,
    Signal,
    blend,
)

CENTERS = np.array([[0.0, 0.0, 0.0], [12.0, 0.0, 0.0], [0.0, 12.0, 0.0]])
NAMES = ["a", "b", "c"]


def clean_batches(n_batches: int, size: int = 30, seed: int = 0, *, noise: float = 0.0):
    """Three well-separated pure clusters, labelled by cluster (``noise`` of them flipped to the next class)."""
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):
        which = rng.integers(0, len(CENTERS), size)
        vectors = CENTERS[which] + rng.normal(scale=0.5, size=(size, CENTERS.shape[1]))
        labels = np.where(rng.random(size) < noise, (which + 1) % len(CENTERS), which)
        yield Batch.of(vectors, [NAMES[y] for y in labels])


def fitted_cluster_detector(**kwargs) -> ClusterDisagreement:
    detector = ClusterDisagreement(**{"n_clusters": 3, "min_cluster_size": 5, "seed": 0, **kwargs})
    for batch in clean_batches(6):
        detector.process_many(batch)
    return detector


# (NeighborIndex and the tie rule of its vote: tests/test_neighbor_search.py)


# --- ClusterDisagreement ------------------------------------------------------------------------


def test_cluster_flags_planted_wrong_label_and_suggests_majority():
    detector = fitted_cluster_detector()
    wrong, right = detector.score_many(Batch.of([CENTERS[1], CENTERS[1]], ["a", "b"]))
    assert wrong.flagged and wrong.suggested_label == "b"
    assert wrong.score == pytest.approx(1.0)
    assert wrong.details["majority_label"] == "b" and wrong.details["majority_share"] == 1.0
    assert not right.flagged and right.suggested_label is None and right.score == pytest.approx(0.0)
    assert wrong.details["cluster_id"] == right.details["cluster_id"]


def test_cluster_unknown_label_in_pure_cluster_is_flagged():
    (signal,) = fitted_cluster_detector().score_many(Batch.of([CENTERS[2]], ["zebra"]))
    assert signal.flagged and signal.suggested_label == "c" and signal.score == pytest.approx(1.0)


def test_cluster_does_not_judge_small_clusters():
    detector = ClusterDisagreement(n_clusters=3, min_cluster_size=1000, window=4096, seed=0)
    for batch in clean_batches(4):
        detector.process_many(batch)
    (signal,) = detector.score_many(Batch.of([CENTERS[1]], ["a"]))
    assert not signal.flagged and signal.score == 0.0


def test_cluster_needs_a_clear_majority():
    # one cluster, labels split 60/40: below min_majority nobody is flagged, but the score still ranks
    rng = np.random.default_rng(1)
    detector = ClusterDisagreement(n_clusters=1, min_cluster_size=5, min_majority=0.8, window=200, seed=0)
    labels = ["a"] * 60 + ["b"] * 40
    detector.process_many(Batch.of(rng.normal(size=(100, 3)), labels))
    minority, majority = detector.score_many(Batch.of(np.zeros((2, 3)), ["b", "a"]))
    assert not minority.flagged and not majority.flagged
    assert minority.score == pytest.approx(0.6) and majority.score == pytest.approx(0.4)


def test_cluster_label_counts_sum_to_window_and_report_mixed_clusters():
    detector = ClusterDisagreement(n_clusters=3, min_cluster_size=5, window=4096, seed=0)
    seen = 0
    for batch in clean_batches(5, noise=0.2, seed=3):
        detector.process_many(batch)
        seen += len(batch)
    counts = detector.label_counts()
    assert set(counts) == {0, 1, 2}
    assert sum(n for row in counts.values() for n in row.values()) == seen
    mixed = [c for c, row in counts.items() if len(row) >= 2]
    assert mixed, counts
    # the planted noise moves class k into k+1, so each mixed cluster holds a pair of adjacent labels
    for c in mixed:
        top = max(counts[c], key=counts[c].get)
        assert counts[c][top] > sum(counts[c].values()) / 2


def test_cluster_pure_stream_has_pure_clusters():
    detector = fitted_cluster_detector()
    counts = detector.label_counts()
    assert sorted(next(iter(row)) for row in counts.values()) == NAMES
    assert all(len(row) == 1 for row in counts.values())


def test_cluster_counts_never_exceed_window_and_totals_keep_growing():
    window = 64
    detector = ClusterDisagreement(n_clusters=3, min_cluster_size=5, window=window, seed=0)
    previous = detector.cluster_totals.copy()
    learned = 0
    for i, batch in enumerate(clean_batches(15, size=25, seed=4)):
        detector.process_many(batch)
        learned += len(batch)
        in_window = sum(n for row in detector.label_counts().values() for n in row.values())
        assert in_window == min(window, learned)
        assert in_window <= window
        totals = detector.cluster_totals
        assert (totals >= previous).all(), "lifetime totals must never shrink"
        assert totals.sum() == previous.sum() + len(batch)
        previous = totals.copy()
    assert detector.cluster_totals.sum() == learned > window


def test_cluster_batch_larger_than_window():
    detector = ClusterDisagreement(n_clusters=3, min_cluster_size=5, window=20, seed=0)
    (batch,) = clean_batches(1, size=50)
    detector.process_many(batch)
    assert sum(n for row in detector.label_counts().values() for n in row.values()) == 20
    assert detector.cluster_totals.sum() == 50


def test_cluster_rejects_bad_parameters():
    with pytest.raises(ValueError):
        ClusterDisagreement(n_clusters=0)
    with pytest.raises(ValueError):
        ClusterDisagreement(n_clusters=10, window=5)


def test_cluster_assign_before_fit_is_minus_one():
    detector = ClusterDisagreement(n_clusters=3)
    assert not detector.is_fitted
    assert detector.assign(np.zeros((2, 3))).tolist() == [-1, -1]


# --- ModelDisagreement -------------------------------------------------------------------------------


def separable_batches(n_batches: int, size: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):
        which = rng.integers(0, 2, size)
        vectors = np.where(which[:, None] == 1, 3.0, -3.0) + rng.normal(size=(size, 4))
        yield Batch.of(vectors, ["ab"[w] for w in which])


def test_model_flags_confident_disagreement_on_separable_data():
    detector = ModelDisagreement(warmup=20, confidence=0.7)
    for batch in separable_batches(10):
        detector.process_many(batch)
    wrong, right = detector.score_many(Batch.of([[3.0] * 4, [3.0] * 4], ["a", "b"]))
    assert wrong.flagged and wrong.suggested_label == "b" and wrong.score > 0.9
    assert wrong.details["predicted"] == "b"
    assert not right.flagged and right.suggested_label is None and right.score < 0.1
    assert wrong.score + right.score == pytest.approx(1.0, abs=1e-3)


def test_model_stays_neutral_until_warm():
    detector = ModelDisagreement(warmup=90, confidence=0.5)
    for batch in separable_batches(3):  # each is scored having learned fewer than 90
        signals = detector.process_many(batch)
        assert all(s.score == 0.0 and not s.flagged for s in signals)
    assert detector.n_learned == 90
    assert any(s.score > 0 for s in detector.process_many(next(separable_batches(1, seed=9))))


def test_user_probabilities_alone_can_flag_during_warm_up():
    detector = ModelDisagreement(warmup=1000, confidence=0.6)
    batch = Batch.of(np.zeros((3, 4)), ["a", "a", "a"],
                     [{"a": 0.1, "b": 0.9}, {"a": 0.7, "b": 0.3}, None])
    confident_other, agrees, nothing = detector.process_many(batch)
    assert confident_other.flagged and confident_other.suggested_label == "b"
    assert confident_other.score == pytest.approx(0.9)
    assert confident_other.details.get("user_model") is True
    assert not agrees.flagged and agrees.score == pytest.approx(0.3)
    assert not nothing.flagged and nothing.score == 0.0


def test_user_probabilities_are_blended_once_warm():
    detector = ModelDisagreement(warmup=20, confidence=0.7, user_weight=0.5)
    for batch in separable_batches(10):
        detector.process_many(batch)
    x = [[3.0] * 4]  # the model is sure this is "b"
    (alone,) = detector.score_many(Batch.of(x, ["b"]))
    (user_disagrees,) = detector.score_many(Batch.of(x, ["b"], [{"a": 1.0, "b": 0.0}]))
    assert alone.score < 0.1
    assert user_disagrees.score == pytest.approx(0.5 * alone.score + 0.5 * 1.0, abs=1e-6)


def test_blend():
    assert blend({"a": 0.8, "b": 0.2}, {"b": 1.0}, 0.25) == pytest.approx({"a": 0.6, "b": 0.4})
    assert blend({}, {"a": 0.3, "b": 0.7}, 0.1) == {"a": 0.3, "b": 0.7}
    assert blend({"a": 1.0}, {}, 0.5) == {"a": 1.0}


def test_random_projection_is_deterministic_per_seed():
    wide = np.random.default_rng(0).normal(size=(5, 100)).astype(np.float32)
    a, b, c = RandomProjection(8, seed=3), RandomProjection(8, seed=3), RandomProjection(8, seed=4)
    out = a.transform(wide)
    assert out.shape == (5, 8)
    np.testing.assert_array_equal(out, b.transform(wide))
    np.testing.assert_array_equal(out, a.transform(wide))  # stable across calls
    assert not np.allclose(out, c.transform(wide))


def test_random_projection_leaves_narrow_vectors_untouched():
    p = RandomProjection(8, seed=0)
    for width in (3, 8):
        narrow = np.arange(2 * width, dtype=np.float32).reshape(2, width)
        np.testing.assert_array_equal(p.transform(narrow), narrow)


def test_random_projection_roughly_keeps_distances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 512)).astype(np.float32)
    y = RandomProjection(256, seed=0).transform(x)
    ratio = np.linalg.norm(y[0] - y[1]) / np.linalg.norm(x[0] - x[1])
    assert 0.7 < ratio < 1.3


def test_model_projects_wide_vectors():
    detector = ModelDisagreement(warmup=0, max_features=4)
    rng = np.random.default_rng(0)
    detector.process_many(Batch.of(rng.normal(size=(10, 50)), ["a", "b"] * 5))
    (features,) = detector._features(rng.normal(size=(1, 50)).astype(np.float32))
    assert sorted(features) == [0, 1, 2, 3]


# --- Combiner -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["vote:0", "bogus", "vote:", "vote:-1", "vote:x", "", "union,intersection"])
def test_combiner_rejects_bad_policies(text):
    with pytest.raises(ValueError, match="combine policy"):
        Combiner.parse(text)


@pytest.mark.parametrize(("text", "expected"),
                         [("union", "union"), (" Intersection ", "intersection"), ("VOTE:2", "vote:2")])
def test_combiner_parses_and_prints(text, expected):
    assert str(Combiner.parse(text)) == expected


SIGNALS = {
    "cluster": Signal(0.9, True, "b"),
    "model": Signal(0.6, True, "c"),
    "extra": Signal(0.2, False),
}


def test_union():
    verdict = Combiner.parse("union").combine(SIGNALS)
    assert verdict.flagged and verdict.score == 0.9 and verdict.suggested_label == "b"
    quiet = Combiner.parse("union").combine({"x": Signal(0.4, False), "y": Signal(0.1, False)})
    assert not quiet.flagged and quiet.score == 0.4 and quiet.suggested_label is None


def test_intersection():
    verdict = Combiner.parse("intersection").combine(SIGNALS)
    assert not verdict.flagged and verdict.score == 0.2
    both = Combiner.parse("intersection").combine({k: SIGNALS[k] for k in ("cluster", "model")})
    assert both.flagged and both.score == 0.6 and both.suggested_label == "b"


def test_vote():
    two = Combiner.parse("vote:2")
    verdict = two.combine(SIGNALS)
    assert verdict.flagged and verdict.score == 0.6 and verdict.details["n_flagged"] == 2
    one_flag = {"cluster": SIGNALS["cluster"], "extra": SIGNALS["extra"], "model": Signal(0.5, False)}
    assert not two.combine(one_flag).flagged
    assert two.combine(one_flag).score == 0.5
    # more votes asked than detectors exist: never flagged
    assert not Combiner.parse("vote:5").combine(SIGNALS).flagged


def test_suggestion_comes_from_most_suspicious_flagging_detector():
    signals = {"cluster": Signal(0.95, False, "x"), "model": Signal(0.7, True, "c"), "other": Signal(0.8, True, "d")}
    assert Combiner.parse("union").combine(signals).suggested_label == "d"


def test_no_voter_speaking_is_a_clean_verdict_under_every_policy():
    # evidence such as the annotators' consensus exists for some samples only
    for policy in ("union", "intersection", "vote:2"):
        verdict = Combiner.parse(policy).combine({})
        assert (verdict.flagged, verdict.score, verdict.suggested_label) == (False, 0.0, None)


def test_verdict_types_are_plain():
    verdict = Combiner.parse("union").combine({"x": Signal(np.float64(0.5), np.True_)})
    assert type(verdict.flagged) is bool and type(verdict.score) is float


# --- LabelMonitor -------------------------------------------------------------------------------------


def test_monitor_keeps_dimension_and_rejects_another():
    monitor = LabelMonitor.from_config(MonitorConfig(n_clusters=2, model_warmup=5))
    assert monitor.dimension is None
    monitor.process(Batch.of(np.eye(4), ["a", "b", "a", "b"]))
    assert monitor.dimension == 4
    monitor.process(Batch.of(np.eye(4)[::-1], ["a", "b", "a", "b"]))
    with pytest.raises(ValueError, match="dimension 3"):
        monitor.process(Batch.of(np.ones((2, 3)), ["a", "b"]))
    assert monitor.dimension == 4
    assert monitor.process(Batch(np.ones((0, 3), dtype=np.float32), [])) == ([], [])


def test_monitor_combines_every_detector():
    monitor = LabelMonitor.from_config(MonitorConfig(
        detectors=("cluster", "model", "neighbors", "confident"), voters=("cluster", "model", "confident"),
        n_clusters=3, min_cluster_size=5, model_warmup=20, confident_warmup=20, policy="vote:2",
        learning_step=30))
    assert {d.name for d in monitor.detectors} == {"cluster", "model", "neighbors", "confident"}
    assert str(monitor.combiner) == "vote:2"
    for batch in clean_batches(6):
        monitor.process(batch)
    (wrong, right), _ = monitor.process(Batch.of([CENTERS[1], CENTERS[2]], ["a", "c"]))
    assert set(wrong.signals) == {"cluster", "model", "neighbors", "confident"}
    assert wrong.verdict.flagged and wrong.verdict.suggested_label == "b"
    assert isinstance(wrong.cluster_id, int)
    assert not right.verdict.flagged


def test_cluster_totals_count_samples_learned_before_kmeans_was_fitted():
    # batches smaller than K: K-means fits only once K samples are in the window; the samples it was
    # fitted on are still samples the clusters hold, and "lifetime totals" must count them
    detector = ClusterDisagreement(n_clusters=4, min_cluster_size=1, window=64, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        detector.process_many(Batch.of(rng.normal(size=(2, 3)), ["a", "b"]))
    assert sum(n for row in detector.label_counts().values() for n in row.values()) == 10
    assert detector.cluster_totals.sum() == 10


@pytest.mark.parametrize("policy", ["union", "intersection", "vote:1", "vote:2"])
@pytest.mark.parametrize("flagged", [True, False])
@pytest.mark.parametrize("suggested", [None, "", "b"])
@pytest.mark.parametrize("score", [0.0, 0.3, 1.0])
def test_one_voter_fast_path_combines_like_the_general_rule(policy, flagged, suggested, score):
    combiner = Combiner.parse(policy)
    signals = {"confident": Signal(score, flagged, suggested, {})}
    assert combiner.combine(signals) == combiner._combine_any(signals)


def test_a_signal_clamps_its_score_into_the_unit_interval_once_for_every_consumer():
    from detectors import Signal

    assert Signal(1.0000001, True).score == 1.0
    assert Signal(-1e-9, False).score == 0.0
    assert Signal(0.25, False).score == 0.25
