"""Live re-audits skip the samples no voter can flag: proven from the model and bounded neighbour
votes (``ConfidentLearning.reaudit``, ``NeighborIndex.vote_bounds``), with exactly the verdicts of re-scoring
every one of them."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from detectors import Batch, ConfidentLearning, LabelIndex, LabelMonitor, MonitorConfig, NeighborIndex
from test_neighbor_search import digits_stream, verdict_rows
from verdicts import assert_same_verdicts

pytestmark = pytest.mark.replay

CONFIG = MonitorConfig(neighbors_per_class=80, learning_step=200, reaudit_delay=100, reaudit_window=1500,
                       n_clusters=10)


def counting_proofs(monitor: LabelMonitor, *, prove: bool = True) -> Counter:
    """Wrap the confident detector's re-audit: count the live rows asked, and those proven clean or whose
    vote the cached candidates gave, both without a full search (or, ``prove=False``, prove nothing)."""
    detector = monitor.detector("confident")
    reaudit, counts, searches = detector.reaudit, Counter(), detector.neighbor_index.search_counts

    def counted(batch: Batch, *, final: bool = False, prove: bool = True) -> list:
        full = searches["full"]
        signals = reaudit(batch, final=final, prove=prove and proving)
        if not final and prove:
            counts.update(asked=len(batch), proven=len(batch) - (searches["full"] - full))
        return signals

    proving = prove
    detector.reaudit = counted
    return counts


@pytest.mark.parametrize("model_share", [None, 0.0], ids=["data-chosen mix", "neighbours alone"])
def test_skipping_what_cannot_be_flagged_gives_exactly_the_verdicts_of_reaudits_that_rescore_everything(model_share):
    vectors, labels, ids = digits_stream(3600, seed=1)
    pruned, everything = LabelMonitor.from_config(CONFIG), LabelMonitor.from_config(CONFIG)
    if model_share is not None:  # the model gets no weight: only the neighbour bounds can prove anything
        for monitor in (pruned, everything):
            monitor.detector("confident").mix.update = lambda *args: None
            monitor.detector("confident").mix.model_share = model_share
    counts = counting_proofs(pruned)
    counting_proofs(everything, prove=False)
    reference = verdict_rows(everything, vectors, labels, ids)
    # the replay guarantee: flags and suggestions exactly, scores within SCORE_TOLERANCE (the model scores
    # the re-audits left in other batches, and BLAS may round a row otherwise for another batch shape)
    assert_same_verdicts(verdict_rows(pruned, vectors, labels, ids), reference)
    assert sum(r[1] and r[2] for r in reference) >= 5, "late flags: the skipped re-audits could have mattered"
    assert counts["proven"] > counts["asked"] / 2, counts
    if model_share is not None:
        assert pruned.detector("confident").neighbor_index.search_counts["bounded"] > 0


def test_a_proven_row_is_never_flagged_by_its_rescore():
    vectors, labels, ids = digits_stream(3000, seed=3, noise=0.2)
    detector = ConfidentLearning(per_class=80, min_class_count=5)
    for start in range(0, 2800, 200):
        detector.process_many(Batch.of(vectors[start:start + 200], labels[start:start + 200],
                                       ids=ids[start:start + 200]))
    learned = Batch.of(vectors[1600:2800], labels[1600:2800], ids=ids[1600:2800])
    proven = np.array([s is None for s in detector.reaudit(learned)])
    flagged = np.array([s.flagged for s in detector.reaudit(learned, prove=False)])
    assert flagged.any() and proven.any() and not (proven & flagged).any()
    assert proven.sum() > 0.5 * (~flagged).sum(), "the proof should cover most clean rows"


def test_vote_bounds_hold_the_full_search_vote_and_are_exact_where_the_candidates_prove_it():
    vectors, labels, ids = digits_stream(3000, seed=4)
    made = []
    for cache in (1000, 0):
        classes = LabelIndex()
        made.append((classes, NeighborIndex(classes, k=5, per_class=60, cache_size=cache)))
    (cached_classes, cached), (full_classes, full) = made
    n_exact = n_loose = 0
    for start in range(0, 3000, 150):
        part = slice(start, start + 150)
        if start >= 600:
            earlier = slice(start - 600, start)  # searched before, by the judging search or re-audits
            bounds = cached.vote_bounds(vectors[earlier], ids[earlier])
            low, high = bounds.low, bounds.high
            assert (bounds.exact == (low == high).all(axis=1)).all()
            vote = full.predict_proba(vectors[earlier], ids[earlier])
            assert (low <= vote + 1e-12).all() and (vote <= high + 1e-12).all()
            n_exact += int((low == high).all(axis=1).sum())
            n_loose += int(((high - low).max(axis=1) > 0).sum() - (high - low == 1).all(axis=1).sum())
            cached.predict_proba(vectors[earlier], ids[earlier], reuse=True)
        cached.predict_proba(vectors[part], ids[part])
        for classes, index in ((cached_classes, cached), (full_classes, full)):
            index.learn(vectors[part], classes.encode(labels[part]), ids[part])
    assert n_exact > 0 and n_loose > 0, (n_exact, n_loose)
