"""The contract every detector keeps, checked over every concrete Detector in the ``detectors`` package.

A new detector is picked up automatically, and runs with its declared defaults
(``from_params(Params())``); FACTORIES may give it smaller parameters, for speed or coverage.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import pickle
import pkgutil
from collections.abc import Callable

import numpy as np
import pytest

import detectors
from detectors import (SCORE_TOLERANCE, Batch, ClusterDisagreement, ConfidentLearning, Detector, ModelDisagreement,
                       NeighborAgreement, Signal)

pytestmark = pytest.mark.replay


def discover_detectors() -> list[type[Detector]]:
    """Every concrete Detector subclass defined in any module of the ``detectors`` package."""
    found: dict[str, type[Detector]] = {}
    modules = [detectors] + [importlib.import_module(m.name)
                             for m in pkgutil.walk_packages(detectors.__path__, detectors.__name__ + ".")]
    for module in modules:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (issubclass(obj, Detector) and not inspect.isabstract(obj)
                    and obj.__module__.startswith(detectors.__name__ + ".")):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[key] for key in sorted(found)]


FACTORIES: dict[type[Detector], Callable[[int], Detector]] = {
    ClusterDisagreement: lambda seed: ClusterDisagreement(4, window=96, min_cluster_size=5, seed=seed),
    # max_features below the width, so the random projection is part of what is checked
    ModelDisagreement: lambda seed: ModelDisagreement(warmup=30, max_features=6, seed=seed),
    NeighborAgreement: lambda seed: NeighborAgreement(k=5, per_class=40, warmup=20, seed=seed),
    # both probability sources on, the cross-fitted model projected below the width
    ConfidentLearning: lambda seed: ConfidentLearning(k=5, per_class=40, n_folds=3, model_weight=0.5,
                                                      warmup=20, min_class_count=3, seed=seed),
}

DETECTORS = discover_detectors()


def make(cls: type[Detector], seed: int = 0) -> Detector:
    factory = FACTORIES.get(cls)
    if factory is not None:
        return factory(seed)
    if getattr(cls, "Params", None) is None:
        pytest.fail(f"detector {cls.__module__}.{cls.__qualname__} declares no Params and has no factory in "
                    f"FACTORIES of {__name__}: the contract suite cannot build it")
    return cls.from_params(cls.Params(), seed)


# --- the synthetic stream ------------------------------------------------------------------------

N_CLASSES, DIM, BATCH, N_BATCHES = 4, 8, 40, 8
EMBEDDING_DIM = 384  # what a sentence-transformer gives: wide enough that BLAS picks other kernels by batch shape
CLASSES = ["c0", "c1", "c2", "c3"]


def stream(seed: int = 0, *, novel_at: int | None = None, dim: int = DIM) -> list[Batch]:
    """Gaussian class clusters, 10% of labels flipped, some samples carrying user probabilities.

    With ``novel_at``, that batch also carries a label never seen before.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=6.0 * math.sqrt(DIM / dim), size=(N_CLASSES, dim))
    batches = []
    for b in range(N_BATCHES):
        truth = rng.integers(0, N_CLASSES, BATCH)
        vectors = centers[truth] + rng.normal(size=(BATCH, dim))
        flip = rng.random(BATCH) < 0.10
        labels = np.where(flip, (truth + rng.integers(1, N_CLASSES, BATCH)) % N_CLASSES, truth)
        names = [CLASSES[y] for y in labels]
        if novel_at == b:
            names[3] = names[17] = "never-seen"
        user = None
        if b >= 2:  # after the first batches, a few samples bring the producer's own prediction
            user = [None] * BATCH
            for i in range(0, BATCH, 5):
                p = float(rng.uniform(0.2, 0.95))
                user[i] = {CLASSES[truth[i]]: p, CLASSES[(truth[i] + 1) % N_CLASSES]: 1.0 - p}
        batches.append(Batch.of(vectors, names, user))
    return batches


def run(detector: Detector, batches: list[Batch]) -> list[list[Signal]]:
    return [detector.process_many(batch) for batch in batches]


def as_tuples(signals: list[Signal]) -> list[tuple]:
    return [(s.score, bool(s.flagged), s.suggested_label, s.details) for s in signals]


# --- the checks -------------------------------------------------------------------------------------


def check_pickle_round_trip(cls):
    batches = stream(1)
    original = make(cls)
    run(original, batches[:4])
    restored = pickle.loads(pickle.dumps(original))
    assert type(restored) is cls
    for batch in batches[4:]:
        assert as_tuples(restored.process_many(batch)) == as_tuples(original.process_many(batch))


def check_seeded_determinism(cls):
    a, b = make(cls, seed=7), make(cls, seed=7)
    for batch in stream(2):
        assert as_tuples(a.process_many(batch)) == as_tuples(b.process_many(batch))


def check_scores_in_unit_interval(cls):
    detector = make(cls)
    n_judged = 0
    for signals in run(detector, stream(3)):
        for s in signals:
            assert isinstance(s, Signal)
            assert isinstance(s.score, float), f"score is {type(s.score).__name__}, not float"
            assert math.isfinite(s.score) and 0.0 <= s.score <= 1.0, s
            kind = type(s.flagged)
            assert kind is bool, f"flagged is {kind.__module__}.{kind.__qualname__}, not the builtin bool: {s}"
            assert s.suggested_label is None or isinstance(s.suggested_label, str)
            assert isinstance(s.details, dict)
            n_judged += s.score > 0
    assert n_judged > 0, "the detector never judged anything in the whole stream"


def check_neutral_during_warm_up(cls):
    detector = make(cls)
    signals = detector.process_many(stream(4)[0])
    assert len(signals) == BATCH
    for s in signals:
        assert s.score == 0.0 and s.flagged is False and s.suggested_label is None, s


def check_out_of_sample(cls):
    detector = make(cls)
    for batch in stream(5):
        before = copy.deepcopy(detector)
        expected = before.score_many(batch)
        assert as_tuples(before.score_many(batch)) == as_tuples(expected), "score_many changed the state"
        assert as_tuples(detector.process_many(batch)) == as_tuples(expected)


def check_scores_ignore_batch_mates(cls):
    # a sample's judgement depends on the learned state and the sample, never on what else is in its batch:
    # the monitor relies on this to judge a replay, polled in other batch sizes, as the first run did.
    # At embedding width, BLAS computes a row of a float32 product by another kernel for another batch
    # shape (a single row takes gemv), so the score may move in its last float32 bits; nothing else may.
    for dim in (DIM, EMBEDDING_DIM):
        detector = make(cls)
        batches = stream(9, dim=dim)
        run(detector, batches[:4])
        for batch in batches[4:6]:
            whole = detector.score_many(batch)
            pieces = [s for rows in (range(0, 7), range(7, 8), range(8, 10), range(10, BATCH))
                      for s in detector.score_many(batch.take(rows))]
            assert_same_judgements(pieces, whole)


def assert_same_judgements(got: list[Signal], expected: list[Signal]) -> None:
    """Flags, suggested labels and details keys identical; scores within float32 rounding."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert (a.flagged, a.suggested_label, sorted(a.details)) == (b.flagged, b.suggested_label, sorted(b.details))
        assert a.score == pytest.approx(b.score, rel=0, abs=SCORE_TOLERANCE)


def check_learning_changes_scores(cls):
    # the converse of out-of-sample: learning a batch must matter, or the check above proves nothing
    detector = make(cls)
    batches = stream(6)
    run(detector, batches[:-1])
    before = as_tuples(detector.score_many(batches[-1]))
    detector.learn_many(batches[-1])
    assert as_tuples(detector.score_many(batches[-1])) != before


def check_novel_label_mid_stream(cls):
    detector = make(cls)
    batches = stream(7, novel_at=5)
    results = run(detector, batches)
    novel = results[5][3], results[5][17]
    for s in novel:
        assert math.isfinite(s.score) and 0.0 <= s.score <= 1.0
    # and the stream goes on; the new label is now a label like any other
    again = detector.process_many(Batch(batches[6].vectors, ["never-seen"] * BATCH, None))
    assert len(again) == BATCH and all(0.0 <= s.score <= 1.0 for s in again)


def check_rescore_proof_is_sound(cls):
    # a live re-audit answers None for the rows it proves clean without re-scoring them: none of them may
    # be flagged by a re-score of every row
    detector = make(cls)
    batches = stream(10)
    run(detector, batches)
    learned = Batch(np.vstack([b.vectors for b in batches[-4:]]), [y for b in batches[-4:] for y in b.labels],
                    [p for b in batches[-4:] for p in (b.user_probas or [None] * len(b))],
                    [i for b in batches[-4:] for i in b.keys()])
    answers = detector.reaudit(learned)
    signals = detector.reaudit(learned, prove=False)
    if signals is None:
        assert answers is None, "a detector that cannot re-score proves nothing about a re-score"
        return
    assert len(answers) == len(signals) == len(learned) and None not in signals
    for answer, signal in zip(answers, signals):
        assert (answer is None and not signal.flagged) or answer == signal


EMPTY = Batch(np.zeros((0, DIM), dtype=np.float32), [])


def check_empty_batch(cls):
    for warm in (False, True):
        detector = make(cls)
        if warm:
            run(detector, stream(8)[:4])
        assert detector.process_many(EMPTY) == []


def check_empty_batch_score_and_learn(cls):
    # score_many and learn_many are public too: "judge each sample" of no samples is []
    for warm in (False, True):
        detector = make(cls)
        if warm:
            run(detector, stream(8)[:4])
        assert detector.score_many(EMPTY) == []
        detector.learn_many(EMPTY)  # a no-op, not a crash
        after = detector.process_many(stream(8)[4])
        assert len(after) == BATCH


CHECKS = {
    "pickle": check_pickle_round_trip,
    "seeded-determinism": check_seeded_determinism,
    "scores-in-unit-interval": check_scores_in_unit_interval,
    "neutral-during-warm-up": check_neutral_during_warm_up,
    "out-of-sample": check_out_of_sample,
    "scores-ignore-batch-mates": check_scores_ignore_batch_mates,
    "learning-changes-scores": check_learning_changes_scores,
    "novel-label-mid-stream": check_novel_label_mid_stream,
    "rescore-proof-is-sound": check_rescore_proof_is_sound,
    "empty-batch": check_empty_batch,
    "empty-batch-score-and-learn": check_empty_batch_score_and_learn,
}


def test_detectors_are_discovered():
    assert DETECTORS, "no concrete Detector subclass found in the detectors package"
    assert {ClusterDisagreement, ModelDisagreement} <= set(DETECTORS)


@pytest.mark.parametrize("cls", DETECTORS, ids=lambda cls: cls.__name__)
def test_every_detector_has_a_factory(cls):
    detector = make(cls)
    assert isinstance(detector, cls)
    assert isinstance(cls.name, str) and cls.name


def test_detector_names_are_unique():
    names = [cls.name for cls in DETECTORS]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize(
    ("cls", "check"),
    [(cls, check) for cls in DETECTORS for check in CHECKS],
    ids=[f"{cls.__name__}:{check}" for cls in DETECTORS for check in CHECKS],
)
def test_contract(cls, check):
    CHECKS[check](cls)
