"""The neighbour search: re-audits that search only what changed give the full search's votes, bit for
bit, across evictions, renewed standardisations and restores; its cache stays bounded; and the
optional HNSW graph finds the same neighbours nearly always."""

from __future__ import annotations

import importlib
import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits

from detectors import Batch, LabelIndex, LabelMonitor, MonitorConfig, NeighborIndex
from detectors.neighbors import CANDIDATE_MARGIN
from detectors.shortlist import exact_similarities, vote_with_ties
from verdicts import assert_same_verdicts, row

pytestmark = pytest.mark.replay

STEP = 150


def digits_stream(n: int, seed: int = 0, noise: float = 0.1):
    """sklearn's digits (64-d), shuffled and repeated with jitter to length ``n``, 10% of labels moved."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(-(-n // len(x)))])[:n]
    vectors = (x[order] + rng.normal(scale=0.5, size=(n, x.shape[1]))).astype(np.float32)
    labels = y[order].copy()
    moved = rng.random(n) < noise
    labels[moved] = (labels[moved] + 1) % 10
    return vectors, [str(v) for v in labels], [f"d{i}" for i in range(n)]


def twins(per_class: int = 60, k: int = 5):
    """Two indexes fed alike: the first keeps candidates, the second always searches in full."""
    made = []
    for cache in (1000, 0):
        classes = LabelIndex()
        made.append((classes, NeighborIndex(classes, k=k, per_class=per_class, cache_size=cache)))
    return made


def test_reaudits_from_cached_candidates_vote_as_full_searches_through_evictions_renewals_and_a_restore():
    vectors, labels, ids = digits_stream(4500)
    (cached_classes, cached), (full_classes, full) = twins()
    recent: list[slice] = []
    for step, start in enumerate(range(0, len(ids), STEP)):
        part = slice(start, start + STEP)
        for window in recent[-6:]:  # re-audits of the last steps' samples, as the monitor runs them
            got = cached.predict_proba(vectors[window], ids[window], reuse=True)
            assert np.array_equal(got, full.predict_proba(vectors[window], ids[window])), f"step {step}"
        assert np.array_equal(cached.predict_proba(vectors[part], ids[part]), full.predict_proba(vectors[part], ids[part]))
        for classes, index in ((cached_classes, cached), (full_classes, full)):
            index.learn(vectors[part], classes.encode(labels[part]), ids[part])
        recent.append(part)
        if step == 15:
            cached_classes, cached = pickle.loads(pickle.dumps((cached_classes, cached)))  # the cache is not saved
            assert len(cached.incremental) == 0
    assert cached.reservoir.n_stamped > len(cached), "samples were evicted"
    assert cached.search_counts["incremental"] > cached.search_counts["full"] / 2, dict(cached.search_counts)


def verdict_rows(monitor: LabelMonitor, vectors, labels, ids) -> list[tuple]:
    rows = []
    for start in range(0, len(ids), 200):
        part = slice(start, start + 200)
        assessments, late = monitor.process(Batch.of(vectors[part], labels[part], ids=ids[part]), payloads=ids[part])
        rows += [row(i, a, late=False) for i, a in zip(ids[part], assessments)]
        rows += [row(v.payload, v.assessment, late=True) for v in late]
    return rows


def test_a_monitor_with_the_candidate_cache_gives_exactly_the_verdicts_of_full_searches():
    vectors, labels, ids = digits_stream(3600, seed=1)
    config = MonitorConfig(neighbors_per_class=80, learning_step=200, reaudit_delay=100, reaudit_window=1500,
                           n_clusters=10)
    cached, full = LabelMonitor.from_config(config), LabelMonitor.from_config(config)
    full.detector("confident").neighbor_index.cache_candidates(0)
    reference = verdict_rows(full, vectors, labels, ids)
    # the votes are the same to the last bit; the two re-audit different samples (the cached one proves
    # more of them clean), so the model sees other batches, and BLAS may round its scores otherwise
    assert_same_verdicts(verdict_rows(cached, vectors, labels, ids), reference)
    assert sum(r[1] and r[2] for r in reference) >= 5, "late flags, or the re-audits prove little"
    counts = cached.detector("confident").neighbor_index.search_counts
    assert counts["incremental"] > 0 and full.detector("confident").neighbor_index.search_counts["incremental"] == 0


def test_the_candidate_cache_holds_one_entry_per_sample_of_the_reaudit_window_at_most():
    vectors, labels, ids = digits_stream(2400, seed=2)
    monitor = LabelMonitor.from_config(MonitorConfig(neighbors_per_class=80, learning_step=200, reaudit_delay=100,
                                                     reaudit_window=600, n_clusters=10))
    verdict_rows(monitor, vectors, labels, ids)
    index = monitor.detector("confident").neighbor_index
    cache = index.incremental.cache
    assert len(cache) == 600 and cache.stamps.shape == (600, index.k + CANDIDATE_MARGIN)
    # standardisations older than every entry are dropped: one per learning step of the window at most,
    # and the current one (entries of samples a re-audit proved clean keep the version of their last search)
    history = index.incremental._history
    assert min(history) >= cache.oldest_version() and len(history) <= 600 // 200 + 1
    # each part saves its own state: the candidates and stacked rows are process-local caches
    restored = pickle.loads(pickle.dumps(index))
    assert len(restored.incremental) == 0 and restored.incremental.width == index.incremental.width
    assert restored.reservoir.peek() is None and len(restored) == len(index)


@pytest.mark.parametrize("last_bits", [0.0, 1.2e-7, -1.2e-7])
def test_duplicates_of_two_labels_tied_at_the_kth_place_share_it_whichever_way_the_last_bits_fall(last_bits):
    # stored rows 2 and 3 are one text labelled two ways; a float32 product may move one of them by an
    # ulp, but the vote is taken on exact similarities, pair by pair, where duplicates tie exactly
    stored = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.6, 0.8], [0.1, 0.99]], dtype=np.float32)
    owner = np.array([0, 1, 0, 1, 0])
    query = np.array([[0.9, 0.1 + last_bits]], dtype=np.float32)
    columns = np.array([0, 2, 3, 4])  # a shortlist, in any order
    values = exact_similarities(stored, query, np.zeros(4, dtype=np.int64), columns)
    assert values[1] == values[2]
    rows, chosen, weights, _ = vote_with_ties(np.zeros(4, dtype=np.int64), columns, values, 2, 1)
    votes = np.bincount(owner[chosen], weights=weights, minlength=2)
    assert chosen.tolist() == [0, 2, 3]
    assert votes[0] - votes[1] == pytest.approx(values[0] + 1e-6)


# --- the approximate index (HNSW) -------------------------------------------------------------------


def test_choosing_hnsw_without_hnswlib_says_what_to_install(monkeypatch):
    real = importlib.import_module

    def without_hnswlib(name, *args):
        if name == "hnswlib":
            raise ImportError("No module named 'hnswlib'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_hnswlib)
    with pytest.raises(ImportError, match=r"labelwatch\[ann\]"):
        MonitorConfig(neighbor_search="hnsw").build_detectors()


def test_hnsw_finds_the_brute_force_neighbours_and_a_restored_graph_searches_alike():
    import hnswlib  # noqa: F401 - the dev extra installs it: missing is an error here, not a skip
    vectors, labels, ids = digits_stream(5000, seed=3)
    votes = {}
    for search in ("brute", "hnsw"):
        classes = LabelIndex()
        index = NeighborIndex(classes, per_class=300, search=search)
        index.learn(vectors[:4500], classes.encode(labels[:4500]), ids[:4500])  # 3,000 stored, 1,500 evicted
        votes[search] = index.predict_proba(vectors[4500:], ids[4500:])
    same = np.all(np.abs(votes["hnsw"] - votes["brute"]) < 1e-12, axis=1)
    assert same.mean() >= 0.98, same.mean()
    restored = pickle.loads(pickle.dumps(index))
    assert np.array_equal(restored.predict_proba(vectors[4500:], ids[4500:]), votes["hnsw"])
    assert index.search_counts["graph"] == 500


def test_the_graph_follows_the_reservoir_as_rows_come_and_go():
    import hnswlib  # noqa: F401 - the dev extra installs it: missing is an error here, not a skip
    from detectors.hnsw import HnswGraph

    graph = HnswGraph(dim=2)
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    graph.sync(rows, np.array([10, 11, 12]))
    assert graph.candidates(np.array([[0.8, 0.6]], dtype=np.float32), 2).tolist() == [[12, 10]]
    graph.sync(rows[[0, 1]], np.array([10, 11]))  # 12 evicted
    assert graph.candidates(np.array([[0.8, 0.6]], dtype=np.float32), 2).tolist() == [[10, 11]]
    assert pickle.loads(pickle.dumps(graph)).candidates(np.array([[0.0, 1.0]], dtype=np.float32), 1).tolist() == [[11]]
