"""The first learning step: judged blind, calibrated provisionally once learned, corroborated until replaced."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detectors import Batch, ClusterDisagreement, LabelMonitor, MonitorConfig

CENTERS = np.array([[0.0, 0.0, 0.0], [12.0, 0.0, 0.0], [0.0, 12.0, 0.0]])
NAMES = ["a", "b", "c"]


def noisy_stream(n: int, noise: float, seed: int = 0, scale: float = 2.0):
    """Three clusters that overlap a little, ``noise`` of the labels moved to the next class; and which."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(CENTERS), n)
    vectors = CENTERS[which] + rng.normal(scale=scale, size=(n, CENTERS.shape[1]))
    flipped = rng.random(n) < noise
    labels = np.where(flipped, (which + 1) % len(CENTERS), which)
    return Batch(vectors.astype(np.float32), [NAMES[y] for y in labels], None, [str(i) for i in range(n)]), flipped


def confident_learning():
    return MonitorConfig(detectors=["confident"], voters=["confident"]).build_detectors()[0]


def test_the_first_step_judged_blind_is_calibrated_provisionally_and_the_second_step_replaces_it():
    batch, flipped = noisy_stream(1000, 0.15)
    first, second = batch.take(range(500)), batch.take(range(500, 1000))
    confident = confident_learning()
    assert all(not s.flagged and s.score == 0 for s in confident.score_many(first))  # nothing learned: no evidence
    confident.learn_many(first)
    # out of sample after all (its fold's model, its neighbours without itself): the thresholds are
    # set and the estimate is the first step's true noise, where it was 0 with nothing to learn from
    assert confident.provisional
    assert confident.estimated_error_rate() == pytest.approx(flipped[:500].mean(), abs=0.04)
    assert np.isfinite(confident.calibration.thresholds.values(3)).all()
    assert confident.budget.error_rate() == 0.0  # the settled calibration has learned nothing yet
    confident.process_many(second)
    assert not confident.provisional
    assert confident.calibration.budget is confident.budget
    assert confident.estimated_error_rate() == pytest.approx(flipped[500:].mean(), abs=0.04)


def stream_through(monitor: LabelMonitor, batch: Batch, poll: int = 50) -> list[tuple[int, str, object]]:
    """(stream position at sending, sample id, assessment) of every flag sent while streaming."""
    sent = []
    for start in range(0, len(batch), poll):
        part = batch.take(range(start, min(start + poll, len(batch))))
        assessments, late = monitor.process(part)
        sent += [(start + i, part.ids[i], a) for i, a in enumerate(assessments) if a.verdict.flagged]
        sent += [(start, v.sample_id, v.assessment) for v in late]
    return sent


def test_flags_of_a_provisional_calibration_are_sent_where_the_clusters_agree():
    batch, flipped = noisy_stream(800, 0.15)
    monitor = LabelMonitor.from_config(MonitorConfig())  # cluster and confident learning, steps of 500
    sent = stream_through(monitor, batch)
    assert monitor.detector("confident").provisional  # 800 samples: the second step is not complete
    assert min(position for position, _, _ in sent) >= 450  # the poll that completes the first step
    assert len(sent) >= 5 and flipped[[int(i) for _, i, _ in sent]].mean() >= 0.9
    assert all(a.signals["cluster"].flagged for _, _, a in sent)


def test_without_another_detector_a_provisional_calibration_sends_no_flag():
    batch, flipped = noisy_stream(800, 0.15)
    monitor = LabelMonitor.from_config(MonitorConfig(detectors=["confident"]))
    assert stream_through(monitor, batch) == []
    # the flags were raised and held back, not lost: they wait in the re-audit window
    held = [p for p in monitor.schedule.window if p.assessment.verdict.details.get("not_corroborated_by") == []]
    assert len(held) >= 5 and flipped[[int(p.sample_id) for p in held]].mean() >= 0.9
    # once the second step is learned the calibration is settled, and flags go out alone
    more, _ = noisy_stream(1200, 0.15)
    sent = stream_through(monitor, more.take(range(800, 1200)))
    assert sent and not monitor.detector("confident").provisional


def test_a_cluster_rescore_leaves_the_sample_out_of_its_cluster():
    detector = ClusterDisagreement(n_clusters=1, min_cluster_size=4, min_majority=0.8, window=16)
    vectors = np.zeros((5, 2), dtype=np.float32)
    detector.learn_many(Batch(vectors, ["a", "a", "a", "a", "b"], None, ["1", "2", "3", "4", "5"]))
    lone = Batch(vectors[4:], ["b"], None, ["5"])
    (in_sample,) = detector.score_many(lone)  # counted among its cluster's 5: a majority of 0.8
    (left_out,) = detector.reaudit(lone)  # its cluster without it: 4 of 4 say "a"
    assert (in_sample.score, left_out.score) == (pytest.approx(0.8), 1.0)
    assert in_sample.flagged and left_out.flagged
    (unknown,) = detector.reaudit(Batch(vectors[:1], ["b"], None, ["never-learned"]))
    assert unknown.score == pytest.approx(0.8)  # not in the window: nothing to leave out


def test_a_checkpoint_of_an_older_release_learns_its_first_step_provisionally_too():
    batch, flipped = noisy_stream(600, 0.15)
    confident = confident_learning()
    confident.score_many(batch.take(range(100)))
    state = pickle.loads(pickle.dumps(confident)).__dict__
    for name in ("provisional_calibration", "provisional_budget_share"):  # what an older release never had
        state.pop(name, None)
    older = type(confident).__new__(type(confident))
    older.__dict__.update(state)
    older.learn_many(batch.take(range(500)))
    assert older.provisional
    flags = [s.flagged for s in older.score_many(batch.take(range(500, 600)))]
    assert any(flags) and flipped[500:][flags].mean() >= 0.9
