"""What a reviewer sees next to a flagged sample: its cluster's label mix and its nearest earlier samples.

The context is taken inside the monitor when the sample is judged (first verdict or re-audit), from
the state that judged it, so it names only samples that arrived before the flagged one, and a replay
cut into other polls takes the same context.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from consumer.demo.datasets import inject_noise, load
from consumer.pipeline import InputRecord, Pipeline
from detectors import Batch, ClusterDisagreement, LabelIndex, LabelMonitor, MonitorConfig, NeighborIndex
from detectors.assessment import Assessment, SampleContext
from detectors.base import Signal
from schemas import ReviewEvent, SourcePosition

CONFIG = MonitorConfig(learning_step=100, reaudit_delay=100, reaudit_window=2000)


# -- NeighborIndex.nearest ---------------------------------------------------------------------------


def brute_force(stored: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine of ``query`` with every stored row, after standardising both by the stored rows' statistics."""
    mean, std = stored.mean(axis=0), stored.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    return unit((stored - mean) / std) @ unit((query - mean) / std)


def test_nearest_agrees_with_a_brute_force_cosine_and_never_returns_the_query_itself():
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, 12)) * rng.uniform(0.1, 20, size=12) + rng.normal(size=12) * 5
    labels = rng.integers(0, 3, 300)
    ids = [f"s{i}" for i in range(300)]
    classes = LabelIndex()
    index = NeighborIndex(classes, per_class=1000)  # nothing evicted: every learned sample is stored
    for start in range(0, 300, 70):
        index.learn(vectors[start:start + 70], classes.encode(["xyz"[c] for c in labels[start:start + 70]]),
                    ids[start:start + 70])
    queries = np.vstack([vectors[:20], rng.normal(size=(5, 12)) * 10])
    query_ids = ids[:20] + [f"new{i}" for i in range(5)]

    found = index.nearest(queries, query_ids, n=5)

    assert len(found) == len(queries)
    for query, query_id, near in zip(queries, query_ids, found):
        sims = brute_force(vectors, query)
        if query_id in ids:
            sims[ids.index(query_id)] = -np.inf
        assert len(near) == 5
        got_ids = [sample_id for sample_id, _, _ in near]
        assert query_id not in got_ids and len(set(got_ids)) == 5
        fifth = np.sort(sims)[-5]
        for sample_id, label, similarity in near:
            row = ids.index(sample_id)
            assert label == "xyz"[labels[row]]
            assert similarity == pytest.approx(sims[row], abs=6e-4)  # rounded to 3 decimals, float32 vectors
            assert sims[row] >= fifth - 1e-5  # among the 5 most similar
        assert [s for _, _, s in near] == sorted((s for _, _, s in near), reverse=True)
    # the query's own vector is stored (under its id): without the exclusion it would come first at 1.0
    assert all(near[0][2] < 0.999 for near in found[:20])


def test_nearest_answers_each_query_alike_whatever_the_other_queries():
    rng = np.random.default_rng(1)
    classes = LabelIndex()
    index = NeighborIndex(classes)
    index.learn(rng.normal(size=(200, 384)).astype(np.float32), classes.encode(["ab"[i % 2] for i in range(200)]),
                [f"s{i}" for i in range(200)])
    queries = rng.normal(size=(40, 384)).astype(np.float32)
    ids = [f"q{i}" for i in range(40)]
    together = index.nearest(queries, ids)
    assert together == [index.nearest(queries[i:i + 1], ids[i:i + 1])[0] for i in range(40)]


def test_nearest_keeps_only_samples_that_arrived_before_the_query_when_told_arrivals():
    rng = np.random.default_rng(2)
    classes = LabelIndex()
    index = NeighborIndex(classes, standardize=False)
    vectors = rng.normal(size=(50, 4))
    index.learn(vectors, classes.encode(["a"] * 50), [f"s{i}" for i in range(50)])
    arrival = {f"s{i}": i for i in range(10, 50)}  # s0..s9 left the window: older than any query
    found = index.nearest(vectors[[30, 12]], ["s30", "s12"], n=8, arrival=arrival, arrived=[30, 12])
    assert all(int(sid[1:]) < 30 for sid, _, _ in found[0]) and len(found[0]) == 8
    assert all(int(sid[1:]) < 12 for sid, _, _ in found[1]) and len(found[1]) == 8
    # without arrivals, later samples are candidates too
    assert any(int(sid[1:]) > 30 for sid, _, _ in index.nearest(vectors[[30]], ["s30"], n=20)[0])


def test_nearest_is_empty_while_the_index_holds_fewer_than_two_samples():
    classes = LabelIndex()
    index = NeighborIndex(classes)
    assert index.nearest(np.ones((2, 3)), ["a", "b"]) == [[], []]
    index.learn(np.ones((1, 3)), classes.encode(["x"]), ["s0"])
    assert index.nearest(np.ones((2, 3)), ["a", "b"]) == [[], []]


def test_label_mix_is_the_cluster_s_label_counts_largest_first():
    rng = np.random.default_rng(0)
    detector = ClusterDisagreement(n_clusters=2, min_cluster_size=5, seed=0)
    assert detector.label_mix(0) == {}
    centers = np.array([[0.0, 0.0], [20.0, 20.0]])
    which = rng.integers(0, 2, 200)
    labels = [("a" if i % 10 else "c") if w == 0 else "b" for i, w in enumerate(which)]
    detector.learn_many(Batch.of(centers[which] + rng.normal(size=(200, 2)), labels))
    near_zero = int(detector.assign(np.zeros((1, 2)))[0])
    mix = detector.label_mix(near_zero)
    expected_c = sum(1 for w, label in zip(which, labels) if w == 0 and label == "c")
    assert mix == {"a": int((which == 0).sum()) - expected_c, "c": expected_c}
    assert list(mix) == ["a", "c"]
    assert detector.label_mix(None) == {} and detector.label_mix(-1) == {}


# -- the monitor ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_digits():
    data = load("digits")
    noisy, corrupted = inject_noise(data.labels, 0.1, n_classes=10, seed=0)
    order = np.random.default_rng(0).permutation(len(data))
    vectors = data.vectors[order]
    labels = [str(c) for c in noisy[order]]
    truth = [str(c) for c in data.labels[order]]
    return vectors, labels, truth, [f"digits-{i}" for i in order.tolist()]


def run_monitor(vectors, labels, ids, cuts) -> list[tuple[int, bool, Assessment]]:
    """Every flagged verdict as (stream position of its sample, late, assessment), the stream cut at ``cuts``."""
    monitor = LabelMonitor.from_config(CONFIG)
    flagged = []
    bounds = [0, *cuts, len(ids)]
    for start, stop in zip(bounds, bounds[1:]):
        assessments, late = monitor.process(Batch.of(vectors[start:stop], labels[start:stop], ids=ids[start:stop]),
                                            payloads=list(range(start, stop)))
        flagged += [(start + i, False, a) for i, a in enumerate(assessments) if a.verdict.flagged]
        flagged += [(v.payload, True, v.assessment) for v in late]
    flagged += [(v.payload, True, v.assessment) for v in monitor.flush()]
    assert monitor.detector("cluster").is_fitted
    return flagged


def test_every_flagged_sample_carries_its_cluster_mix_and_its_nearest_earlier_samples(noisy_digits):
    vectors, labels, truth, ids = noisy_digits
    position = {sample_id: i for i, sample_id in enumerate(ids)}
    flagged = run_monitor(vectors, labels, ids, cuts=list(range(64, len(ids), 64)))

    assert sum(not late for _, late, _ in flagged) >= 20 and sum(late for _, late, _ in flagged) >= 5, \
        "the stream must flag first verdicts and re-audits, or the checks prove little"
    agree_with_truth = []
    for at, late, assessment in flagged:
        context = assessment.context
        assert isinstance(context, SampleContext)
        assert len(context.neighbors) == min(5, at)  # as many earlier samples as there are, up to 5
        for sample_id, label, similarity in context.neighbors:
            assert position[sample_id] < at, f"{'late' if late else 'first'} verdict shows a later sample"
            assert label == labels[position[sample_id]]  # the label that sample was given
            assert -1.0 <= similarity <= 1.0
            agree_with_truth.append(label == truth[at])
        similarities = [s for _, _, s in context.neighbors]
        assert similarities == sorted(similarities, reverse=True)
        counts = list(context.cluster_labels.values())
        assert sum(counts) > 0 and counts == sorted(counts, reverse=True)
        assert set(context.cluster_labels) <= set(labels)
    # digits' neighbours are mostly of the sample's true digit, while the flagged label is mostly wrong
    assert np.mean(agree_with_truth) > 0.6


def test_a_replay_cut_into_other_polls_takes_the_same_contexts(noisy_digits):
    vectors, labels, _, ids = noisy_digits
    contexts = lambda flagged: sorted((at, late, a.context.cluster_labels, a.context.neighbors)  # noqa: E731
                                      for at, late, a in flagged)
    reference = contexts(run_monitor(vectors, labels, ids, cuts=list(range(100, len(ids), 100))))
    cuts = sorted(set(np.random.default_rng(5).integers(1, len(ids), 40).tolist()))
    assert contexts(run_monitor(vectors, labels, ids, cuts)) == reference


def test_assessments_of_checkpoints_before_the_context_load_with_none():
    old = Assessment.__new__(Assessment)
    old.__setstate__([Signal(0.9, True), {"confident": Signal(0.9, True)}])  # what an older release pickled
    assert old.context is None and old.verdict.flagged
    new = Assessment(Signal(0.9, True), {}, SampleContext({"a": 3}, (("s1", "a", 0.5),)))
    restored = Assessment.__new__(Assessment)
    restored.__setstate__(new.__getstate__())
    assert restored == new


# -- the consumer pipeline --------------------------------------------------------------------------


def digits_records(vectors, labels, ids, start: int, stop: int, *, dataset: str = "digits") -> list[InputRecord]:
    return [InputRecord(json.dumps({"sample_id": ids[i], "label": labels[i], "dataset": dataset,
                                    "embedding": [float(v) for v in vectors[i]],
                                    "metadata": {"scan": f"batch-{i // 100}", "row": i}}).encode(),
                        SourcePosition(topic="annotations", partition=0, offset=i))
            for i in range(start, stop)]


def test_review_events_carry_the_context_and_the_sample_s_metadata(noisy_digits):
    vectors, labels, _, ids = noisy_digits
    position = {sample_id: i for i, sample_id in enumerate(ids)}
    pipeline = Pipeline(CONFIG, None)
    events = []
    for start in range(0, 900, 150):
        events += pipeline.process(digits_records(vectors, labels, ids, start, start + 150)).events
    assert len(events) >= 5
    for event in events:
        at = position[event.sample_id]
        assert event.metadata == {"scan": f"batch-{at // 100}", "row": at}
        assert event.context is not None and len(event.context.neighbors) == min(5, at)
        assert sum(event.context.cluster_labels.values()) > 0
        for neighbor in event.context.neighbors:
            assert position[neighbor.sample_id] < at and neighbor.label == labels[position[neighbor.sample_id]]
        assert ReviewEvent.model_validate_json(event.model_dump_json()) == event  # survives the wire


def test_a_flag_held_back_by_a_reviewed_false_alarm_is_counted(noisy_digits):
    vectors, labels, _, ids = noisy_digits
    pipeline = Pipeline(CONFIG, None)
    flagged = None
    for start in range(0, len(ids) - 100, 100):  # the first half of a step: judged, not learned yet
        events = pipeline.process(digits_records(vectors, labels, ids, start, start + 50)).events
        flagged = next((e for e in events if not e.late), None)
        if flagged is not None:
            break
        pipeline.process(digits_records(vectors, labels, ids, start + 50, start + 100))
    assert flagged is not None, "a flag is needed to call a false alarm"
    assert pipeline.dataset_state("digits").monitor.correct(flagged.sample_id, "false_alarm") == "false_alarm"
    # the same sample again under another id, judged by the same state: the reviewer's answer holds it back
    at = ids.index(flagged.sample_id)
    twin = json.loads(digits_records(vectors, labels, ids, at, at + 1)[0].value)
    twin["sample_id"] += "-twin"
    result = pipeline.process([InputRecord(json.dumps(twin).encode())])
    assert not result.events and not result.verdicts[0].flagged
    count = pipeline.metrics.registry.get_sample_value("labelwatch_flags_held_back_total", {"dataset": "digits"})
    assert count == 1
