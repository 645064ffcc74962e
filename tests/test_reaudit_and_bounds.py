"""Retrospective re-audit, out-of-sample re-scoring, and state that stops growing."""

from __future__ import annotations

import pickle

import numpy as np
import orjson

from consumer.pipeline import InputRecord, Pipeline
from detectors import Batch, ConfidentLearning, FoldLDA, LabelIndex, LabelMonitor, MonitorConfig, NeighborIndex
from detectors.budget import LIVE_SHARE, allowance
from schemas import make_event_id

CENTERS = np.array([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])


def stream(n: int, seed: int, noise: float = 0.0):
    rng = np.random.default_rng(seed)
    which = rng.integers(0, 3, n)
    vectors = CENTERS[which] + rng.normal(size=(n, 4))
    labels = which.copy()
    flip = rng.random(n) < noise
    labels[flip] = (labels[flip] + 1) % 3
    return vectors, ["abc"[v] for v in labels], flip


def test_a_sample_judged_on_thin_evidence_is_flagged_late_by_the_reaudit():
    monitor = LabelMonitor.from_config(MonitorConfig(detectors=("confident",), confident_warmup=0, min_class_count=3,
                                                     reaudit_delay=30, reaudit_window=500,
                                                     learning_step=30))
    # the very first batch: no evidence at all, so nothing can be flagged yet
    early_vectors = np.vstack([CENTERS[0], CENTERS[0], CENTERS[1], CENTERS[2]])
    first, late = monitor.process(Batch.of(early_vectors, ["a", "a", "b", "a"], ids=["e0", "e1", "e2", "wrong"]),
                                  payloads=["e0", "e1", "e2", "wrong"])
    assert not any(a.verdict.flagged for a in first) and late == []
    late_ids = []
    for i in range(10):
        vectors, labels, _ = stream(30, seed=i)
        _, late = monitor.process(Batch.of(vectors, labels, ids=[f"s{i}-{j}" for j in range(30)]),
                                  payloads=[f"s{i}-{j}" for j in range(30)])
        late_ids += [v.payload for v in late]
    assert late_ids.count("wrong") == 1, "the re-audit should catch, once, the sample labelled 'a' in cluster 'c'"
    assert not {"e0", "e1", "e2"} & set(late_ids)


def test_flush_reaudits_the_whole_window_and_late_events_keep_deterministic_ids():
    def run():
        pipeline = Pipeline(MonitorConfig(detectors=("confident",), reaudit_delay=10_000, reaudit_window=10_000),
                            embedder=None)
        vectors, labels, flipped = stream(600, seed=1, noise=0.1)
        records = [InputRecord(orjson.dumps({"sample_id": f"x{i}", "label": labels[i], "embedding": vectors[i].tolist(),
                                             "annotator_id": f"ann-{i % 3}"}))
                   for i in range(600)]
        live = [e for start in range(0, 600, 100) for e in pipeline.process(records[start:start + 100]).events]
        final = pipeline.flush()
        annotators = pipeline.datasets["default"].annotators.report()
        return live, final, flipped, annotators

    live, final, flipped, annotators = run()
    assert final.events and all(e.late for e in final.events)
    # an annotator's flag count includes the flags the final re-audit raised on their samples
    assert sum(row["flagged"] for row in annotators) == len(live) + len(final.events)
    assert not ({e.sample_id for e in live} & {e.sample_id for e in final.events}), "a sample is flagged once"
    truth = {f"x{i}" for i in np.flatnonzero(flipped)}
    caught = {e.sample_id for e in live + final.events} & truth
    assert len(caught) / len(truth) >= 0.8
    for event in final.events:
        assert event.event_id == make_event_id(event.dataset, event.sample_id, event.label, "flagged")
    # the final re-audit's last word on every sample not flagged before, flagged or clean
    assert all(v.late for v in final.verdicts)
    assert {v.sample_id for v in final.verdicts if v.flagged} == {e.sample_id for e in final.events}
    assert {v.sample_id for v in final.verdicts} == {f"x{i}" for i in range(600)} - {e.sample_id for e in live}
    live_again, final_again, _, _ = run()
    assert [e.event_id for e in final_again.events] == [e.event_id for e in final.events]


def test_crossfit_rescoring_stays_out_of_sample():
    # a sample learned with a deliberately wrong label must not be "confirmed" by its own fold model
    classes = LabelIndex()
    model = FoldLDA(classes, n_folds=3)
    vectors, labels, _ = stream(600, seed=2)
    ids = [f"c{i}" for i in range(600)]
    model.learn(vectors, classes.encode(labels), ids)
    odd = np.array([CENTERS[0]] * 20)
    odd_ids = [f"odd{i}" for i in range(20)]
    before = model.predict_proba(odd, odd_ids)
    model.learn(odd, classes.encode(["c"] * 20), odd_ids)
    after = model.predict_proba(odd, odd_ids)
    c = classes.id_of("c")
    # each odd sample is predicted by the model of its fold, which never learned it
    assert (after[:, c] < 0.5).all()
    assert np.abs(after - before).max() < 0.5


def test_neighbor_votes_leave_the_sample_itself_out():
    classes = LabelIndex()
    index = NeighborIndex(classes, k=1)
    index.learn(np.array([[1.0, 0.0], [0.0, 1.0]]), classes.encode(["a", "b"]), ["p", "q"])
    # querying "p" with its own vector must vote with its only other neighbour, "q"
    assert index.predict_proba(np.array([[1.0, 0.0]]), ["p"]).tolist() == [[0.0, 1.0]]


def test_state_stops_growing_once_reservoirs_and_windows_are_full():
    monitor = LabelMonitor.from_config(MonitorConfig(n_clusters=4, cluster_window=200, neighbors_per_class=50,
                                                     reaudit_window=300, reaudit_delay=100))
    sizes = []
    for chunk in range(12):
        vectors, labels, _ = stream(250, seed=chunk, noise=0.1)
        monitor.process(Batch.of(vectors, labels, ids=[f"m{chunk}-{j}" for j in range(250)]))
        if chunk in (9, 11):  # (the anchor estimate's window, the largest, is full from 2,000 samples)
            sizes.append(len(pickle.dumps(monitor)))
    confident = monitor.detector("confident")
    assert len(confident.neighbors) == 3 * 50
    assert len(confident.budget.anchors._labels) == confident.budget.anchors.min_rows
    assert len(monitor.schedule.window) == 300
    assert sizes[1] <= sizes[0] * 1.05, f"state grew from {sizes[0]} to {sizes[1]} bytes"


def test_confident_learning_blends_the_user_prediction_before_thresholding():
    detector = ConfidentLearning(neighbor_weight=1.0, model_weight=0.0, user_weight=1.0, warmup=0, min_class_count=3)
    vectors, labels, _ = stream(300, seed=3)
    detector.process_many(Batch.of(vectors, labels))
    sure = {"b": 1.0}
    (with_user,) = detector.score_many(Batch.of([[2.0, 2.0, 0, 0]], ["a"], [sure]))
    (without,) = detector.score_many(Batch.of([[2.0, 2.0, 0, 0]], ["a"]))
    assert with_user.score > without.score


def test_flags_sent_while_streaming_stay_within_half_the_estimated_number_of_label_errors():
    # cluster disagreement and confident learning both vote (union), and the clusters flag far more
    # than the noise (one cluster, a majority of a fifth suffices): first verdicts and re-audits
    # share one budget, half of confident learning's estimate of the label errors among the samples seen

    from test_replay_determinism import CONFIG, sequence

    vectors, labels, ids = sequence(n=3000, dim=16)
    monitor = LabelMonitor.from_config(CONFIG.replace(policy="union", n_clusters=1, min_majority=0.2))
    withdrawn = 0
    for start in range(0, 3000, 100):
        rows = slice(start, start + 100)
        assessments, late = monitor.process(Batch.of(vectors[rows], labels[rows], ids=ids[rows]), payloads=ids[rows])
        withdrawn += sum("over_budget" in a.verdict.details for a in assessments)
        # each kind spends within the allowance against the account settled at the last step
        # (between two steps the two together may overshoot by what the other spent since)
        account = monitor.budget.account
        assert account["at_step"] + account["first"] + account["late"] == monitor.n_flagged_live
        spent = max(account["first"], account["late"])
        assert spent == 0 or account["at_step"] + spent <= monitor._allowance(monitor.n_seen, live=True)
    assert withdrawn > 0.5 * monitor.n_flagged_live, "the budget must have bound, or this proves little"
    final = sum(late.assessment.verdict.flagged for late in monitor.flush())
    assert monitor.n_flagged_live + final > allowance(LIVE_SHARE * monitor.estimated_error_rate(), 3000), \
        "the final re-audit may spend the half that streaming kept back"
    assert monitor.n_flagged_live + final <= monitor._allowance(monitor.n_learned)


def test_the_noise_budget_spends_on_the_samples_surest_of_another_class():
    from detectors.noise import NoiseBudget, label_margin

    budget = NoiseBudget(capacity=100, min_count=1)
    # label 0's history: a fifth of its samples break the rule, margins spread over [-1, 1]
    budget.update(np.linspace(-1, 1, 50), np.zeros(50, dtype=int), np.arange(50) >= 40)
    proba = np.array([[0.30, 0.35, 0.35],   # unsure of everything: low self-confidence, small margin
                      [0.10, 0.85, 0.05]])  # surely another class
    margins = label_margin(proba, np.array([0, 0]))
    assert budget.within(margins, np.array([0, 0])).tolist() == [False, True]
    # a share of the budget moves the cut up: at a tenth of it, only margins among the top 2% pass
    assert budget.within(np.array([0.9, 0.99]), np.array([0, 0]), share=0.1).tolist() == [False, True]


def test_a_noise_budget_from_an_older_checkpoint_drops_its_self_confidences_and_keeps_its_counts():
    from detectors.noise import NoiseBudget

    old = NoiseBudget(capacity=100, min_count=1)
    old.update(np.linspace(0, 1, 10), np.zeros(10, dtype=int), np.arange(10) < 2)
    del old.__dict__["ranks_by"], old.__dict__["_in_joint"]  # what releases before margin ranking pickled
    restored = pickle.loads(pickle.dumps(old))
    assert restored.ranks_by == "margin" and restored._reservoirs == {}
    assert restored.noise_rate(0) == 0.2 and restored.error_rate() == 0.2 == restored.calibrated_error_rate()
    assert not restored.within(np.array([1.0]), np.array([0])).any()  # no margins yet: nothing within
    restored.update(np.linspace(-1, 1, 10), np.zeros(10, dtype=int), np.zeros(10, dtype=bool))
    assert restored.within(np.array([1.0]), np.array([0])).tolist() == [True]


def test_the_final_reaudit_flags_only_what_streaming_left_of_the_budget_and_keeps_the_highest_scores():
    import copy

    vectors, labels, _ = stream(1500, seed=3, noise=0.2)
    ids = [f"s{i}" for i in range(1500)]
    monitor = LabelMonitor.from_config(MonitorConfig(learning_step=100, reaudit_delay=100))
    for start in range(0, 1500, 100):
        rows = slice(start, start + 100)
        monitor.process(Batch.of(vectors[rows], labels[rows], ids=ids[rows]), payloads=ids[rows])
    unbounded = copy.deepcopy(monitor)
    unbounded._allowance = lambda n, live=False: None
    scores = {late.payload: late.assessment.verdict.score for late in unbounded.flush() if late.assessment.verdict.flagged}
    # an estimate that leaves room for 20 more flags than streaming sent, fewer than cleanlab would add
    room = 20
    assert len(scores) > room
    monitor._allowance = lambda n, live=False: monitor.n_flagged_live + room + 0.5
    final = [late for late in monitor.flush() if late.assessment.verdict.flagged]
    assert len(final) == room
    assert sorted(late.assessment.verdict.score for late in final) == sorted(scores.values())[-room:]


def test_the_error_estimate_is_calibrated_like_cleanlabs_confident_joint():
    from detectors.noise import NoiseBudget

    budget = NoiseBudget(capacity=100, min_count=1)
    # label 0: 10 samples, 4 of them in the confident joint, 1 of those confidently another class;
    # label 1: 10 samples, all in the joint, none another class
    budget.update(np.zeros(10), np.zeros(10, dtype=int), np.arange(10) == 0, np.arange(10) < 4)
    budget.update(np.zeros(10), np.ones(10, dtype=int), np.zeros(10, dtype=bool), np.ones(10, dtype=bool))
    assert budget.error_rate() == 1 / 20  # the raw count
    assert budget.calibrated_error_rate() == (1 / 4 * 10) / 20  # label 0's row rescaled from 4 samples to 10
    assert budget.noise_rate(0) == 1 / 10  # each label's live share stays on the lower, raw rate
