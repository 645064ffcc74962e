"""The corrections loop: reviewers' answers flow back and the next verdicts get better."""

from __future__ import annotations

import pickle

import numpy as np
import orjson
import pytest

from consumer.pipeline import InputRecord, Pipeline
from detectors import Batch, LabelMonitor, MonitorConfig
from schemas import SourcePosition

DIM = 8


def stream(n: int, seed: int = 0, variant_share: float = 0.05, noise: float = 0.08):
    """Classes a/b/c; a legitimate variant of 'a' sits near 'b' (true label a: flags on it are false
    alarms); ``noise`` of the other labels are really wrong. Returns messages and the truly wrong ids."""
    rng = np.random.default_rng(seed)
    centers = {"a": np.zeros(DIM), "b": np.eye(DIM)[0] * 6, "c": np.eye(DIM)[1] * 6}
    variant = np.eye(DIM)[0] * 6 + np.eye(DIM)[2] * 0.8  # inside class b's cloud
    messages, wrong = [], set()
    for i in range(n):
        sid = f"s{i}"
        if rng.random() < variant_share:
            vector, label = variant + rng.normal(scale=0.8, size=DIM), "a"
        else:
            truth = "abc"[int(rng.integers(0, 3))]
            vector, label = centers[truth] + rng.normal(size=DIM), truth
            if rng.random() < noise:
                label = "abc"[("abc".index(truth) + int(rng.integers(1, 3))) % 3]
                wrong.add(sid)
        messages.append({"sample_id": sid, "label": label, "embedding": np.round(vector, 4).tolist(),
                         "metadata": {"truth": label if sid not in wrong else None}})
    return messages, wrong


def records(messages, start=0, topic="in"):
    return [InputRecord(orjson.dumps(m), SourcePosition(topic=topic, partition=0, offset=start + i))
            for i, m in enumerate(messages)]


def run(messages, wrong, *, reviewers: bool, until: int) -> tuple[float, int]:
    """Precision of the flags after ``until``; with ``reviewers``, every flag before it is answered."""
    pipeline = Pipeline(MonitorConfig(detectors=("cluster", "neighbors", "confident")), embedder=None)
    truth = {m["sample_id"]: m for m in messages}
    later_flags = []
    for start in range(0, len(messages), 100):
        result = pipeline.process(records(messages[start:start + 100], start))
        flagged = {e.sample_id for e in result.events}
        if start >= until:
            later_flags += flagged
        elif reviewers:
            answers = []
            for sid in sorted(flagged):
                if sid in wrong:
                    right = next(label for label in "abc" if label != truth[sid]["label"])  # stand-in: any other
                    answers.append({"sample_id": sid, "outcome": "confirmed", "corrected_label": right})
                else:
                    answers.append({"sample_id": sid, "outcome": "false_alarm"})
            assert not pipeline.correct(records(answers, topic="corrections")).dead_letters
    precision = sum(sid in wrong for sid in later_flags) / max(len(later_flags), 1)
    return precision, len(later_flags)


def test_reviewed_false_alarms_make_the_next_verdicts_on_similar_samples_better():
    messages, wrong = stream(4000)
    before, n_before = run(messages, wrong, reviewers=False, until=2000)
    after, n_after = run(messages, wrong, reviewers=True, until=2000)
    print(f"\nprecision after 2000 samples: {before:.3f} ({n_before} flags) without reviewers, "
          f"{after:.3f} ({n_after} flags) with every earlier flag reviewed")
    assert before < 0.85, "the variant must cause false alarms, or there is nothing to improve"
    assert after >= before + 0.1


def test_a_confirmed_error_is_learned_with_its_corrected_label_or_not_at_all():
    monitor = LabelMonitor.from_config(MonitorConfig(detectors=("cluster",), voters=("cluster",), n_clusters=2,
                                                     learning_step=4))
    vectors = np.array([[0.0, 0], [0, 0.1], [5, 5], [5, 5.1]])
    monitor.process(Batch.of(vectors[:3], ["a", "a", "a"], ids=["x", "y", "z"]))
    assert monitor.correct("z", "confirmed", "b") == "relabelled"  # before its step is learned
    assert monitor.correct("y", "confirmed") == "excluded"
    monitor.process(Batch.of(vectors[3:], ["b"], ids=["w"]))  # completes the step
    counts = monitor.detector("cluster").label_counts()
    learned = {label: n for row in counts.values() for label, n in row.items()}
    assert learned == {"a": 1, "b": 2}, "z learned as b, y not learned at all"
    assert monitor.correct("x", "confirmed", "b") == "queued"  # already learned: learned again, as b
    assert monitor.correct("gone", "false_alarm") == "unknown"


def test_invalid_corrections_are_dead_lettered_with_a_reason():
    pipeline = Pipeline(MonitorConfig(), embedder=None)
    result = pipeline.correct(records([{"sample_id": "s", "outcome": "maybe"},
                                       {"sample_id": "s", "outcome": "false_alarm", "corrected_label": "x"}]))
    assert [letter.error_type for _, letter in result.dead_letters] == ["invalid_correction"] * 2
    assert "outcome" in result.dead_letters[0][1].reason and "corrected_label" in result.dead_letters[1][1].reason


def test_a_skip_changes_nothing_and_is_counted_as_skipped():
    messages, _ = stream(300)
    pipeline = Pipeline(MonitorConfig(), embedder=None)
    pipeline.process(records(messages))
    sid = messages[-1]["sample_id"]
    before = pipeline.datasets["default"].monitor
    window = [(p.sample_id, p.label, p.excluded) for p in before.schedule.window]
    result = pipeline.correct(records([{"sample_id": sid, "outcome": "skip", "reviewer_id": "ana",
                                        "schema_version": 2}], topic="corrections"))
    assert not result.dead_letters
    assert [(p.sample_id, p.label, p.excluded) for p in before.schedule.window] == window
    assert len(before.false_alarms) == 0 and not before._corrections
    assert pipeline.datasets["default"].reviewed == {}
    assert pipeline.metrics.corrections.labels(dataset="default", outcome="skip", applied="skipped")._value.get() == 1


def test_answers_scale_the_error_estimate_by_the_share_of_flags_confirmed():
    messages, _ = stream(1500)
    pipeline = Pipeline(MonitorConfig(detectors=("cluster", "neighbors", "confident")), embedder=None)
    pipeline.process(records(messages))
    monitor = pipeline.datasets["default"].monitor
    before = monitor.estimated_error_rate()
    assert before > 0
    assert pipeline.metrics.registry.get_sample_value("labelwatch_estimated_error_rate", {"dataset": "default"}) == before
    ids = [m["sample_id"] for m in messages[-40:]]
    answers = ([{"sample_id": sid, "outcome": "false_alarm"} for sid in ids[:30]]
               + [{"sample_id": sid, "outcome": "confirmed"} for sid in ids[30:]]
               + [{"sample_id": ids[0], "outcome": "skip"}])  # a pass says nothing
    assert not pipeline.correct(records(answers, topic="corrections")).dead_letters
    # 10 confirmed of 40, with 10 pseudo-confirmations: the root of (10 + 10) / (40 + 10)
    assert monitor.estimated_error_rate() == pytest.approx(before * (20 / 50) ** 0.5)
    published = pipeline.metrics.registry.get_sample_value("labelwatch_estimated_error_rate", {"dataset": "default"})
    assert published == pytest.approx(monitor.estimated_error_rate()), "the gauge follows the answers"
    assert monitor.correct("long-gone", "false_alarm") == "unknown"  # still an answer about a flag
    assert monitor.estimated_error_rate() == pytest.approx(before * (20 / 51) ** 0.5)

    older = LabelMonitor.__new__(LabelMonitor)  # a checkpoint from before answers scaled the estimate
    older.__setstate__({k: v for k, v in pickle.loads(pickle.dumps(monitor)).__dict__.items() if k != "confirmed"})
    assert older.estimated_error_rate() == pytest.approx(before)


def test_the_error_estimate_learns_the_labels_as_annotated_not_the_reviewers_corrections():
    """Corrected samples are picked because the evidence was clear: learned as clean, they would make
    their classes look cleaner than the annotators left them."""
    messages, wrong = stream(1500, seed=2)
    monitors = {}
    for reviewed in (False, True):
        pipeline = Pipeline(MonitorConfig(detectors=("cluster", "neighbors", "confident")), embedder=None)
        for start in range(0, 1500, 250):
            result = pipeline.process(records(messages[start:start + 250], start))
            if reviewed:  # a correction for every wrong label flagged: some before their step, some after
                answers = [{"sample_id": e.sample_id, "outcome": "confirmed", "corrected_label": "abc"[
                    ("abc".index(e.label) + 1) % 3]} for e in result.events if e.sample_id in wrong]
                pipeline.correct(records(answers, topic="corrections"))
        monitors[reviewed] = pipeline.datasets["default"].monitor
    plain, answered = (monitors[k].detector("confident").calibration.budget.anchors for k in (False, True))
    assert answered._labels.tolist() == plain._labels.tolist(), "the annotators' labels, every sample once"
    learned = {k: monitors[k].detector("cluster").label_counts() for k in monitors}
    assert learned[True] != learned[False], "the detectors themselves learned the corrections"
