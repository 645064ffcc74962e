"""Nearest-neighbour label agreement over a bounded, per-class reservoir of past samples."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pydantic import Field
from threadpoolctl import ThreadpoolController

from detectors.base import NEUTRAL, Batch, Detector, LabelIndex, Signal
from detectors.registry import Params, register


class RunningStandardizer:
    """Per-feature running mean and variance (Chan's parallel update), applied on demand.

    >>> s = RunningStandardizer()
    >>> s.update(np.array([[0.0, 10.0], [2.0, 30.0]]))
    >>> s.transform(np.array([[1.0, 20.0]])).tolist()
    [[0.0, 0.0]]
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        x = np.asarray(x, dtype=np.float64)
        n_b, mean_b = len(x), x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        if self.mean is None:
            self.n, self.mean, self._m2 = n_b, mean_b, m2_b
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self._m2 = self._m2 + m2_b + delta**2 * self.n * n_b / n
        self.n = n

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean is None:
            return np.asarray(x, dtype=np.float32)
        std = np.sqrt(self._m2 / max(self.n, 1))
        std = np.where(std > 1e-6, std, 1.0)
        out = np.subtract(x, self.mean)  # float64, as the statistics: one buffer, divided in place
        np.divide(out, std, out=out)
        return out.astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)


class NeighborIndex:
    """A bounded index of past samples that votes on labels by cosine similarity.

    Each label keeps a reservoir of at most ``per_class`` samples (Algorithm R, seeded), so memory
    is bounded however long the stream runs while the reservoir stays a uniform sample of that
    label's history. Vectors are standardised with running statistics, then compared by cosine.
    A query never votes with a stored sample of the same id (leave-one-out), so re-scoring an
    already learned sample stays out of sample.

    >>> classes = LabelIndex()
    >>> index = NeighborIndex(classes, k=3)
    >>> index.learn(np.array([[0, 1], [0, 2], [5, 0], [6, 0]], dtype=float), classes.encode("aabb"), ["1", "2", "3", "4"])
    >>> index.predict_proba(np.array([[0.0, 1.5]]), ["q"]).round(2).tolist()
    [[1.0, 0.0]]
    """

    def __init__(self, classes: LabelIndex, *, k: int = 10, per_class: int = 1000, standardize: bool = True,
                 seed: int = 0):
        self.classes = classes
        self.k = k
        self.per_class = per_class
        self.standardize = standardize
        self._rng = np.random.default_rng(seed)
        self._scaler = RunningStandardizer()
        self._vectors: dict[int, np.ndarray] = {}
        self._ids: dict[int, list[str]] = {}
        self._seen: dict[int, int] = {}
        self._stacked: tuple[np.ndarray, np.ndarray, dict[str, list[int]]] | None = None

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._ids.values())

    def learn(self, vectors: np.ndarray, label_ids: np.ndarray, ids) -> None:
        if self.standardize:
            self._scaler.update(vectors)
        for vector, label, sample_id in zip(vectors, label_ids.tolist(), ids):
            seen = self._seen.get(label, 0)
            if seen < self.per_class:
                store = self._vectors.get(label)
                if store is None:
                    store = self._vectors[label] = np.zeros((self.per_class, len(vector)), dtype=np.float32)
                    self._ids[label] = []
                store[seen] = vector
                self._ids[label].append(sample_id)
            else:
                slot = int(self._rng.integers(0, seen + 1))
                if slot < self.per_class:
                    self._vectors[label][slot] = vector
                    self._ids[label][slot] = sample_id
            self._seen[label] = seen + 1
        self._stacked = None

    def _matrix(self) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
        if self._stacked is None:
            labels = sorted(self._ids)
            raw = np.vstack([self._vectors[c][: len(self._ids[c])] for c in labels])
            owner = np.concatenate([np.full(len(self._ids[c]), c) for c in labels])
            positions: dict[str, list[int]] = {}
            for position, sample_id in enumerate(i for c in labels for i in self._ids[c]):
                positions.setdefault(sample_id, []).append(position)
            self._stacked = (_unit_rows(self._scaler.transform(raw)) if self.standardize else _unit_rows(raw), owner,
                             positions)
        return self._stacked

    def _duplicates(self, matrix: np.ndarray) -> np.ndarray | None:
        """:func:`duplicate_columns` of the stacked matrix, cached with it."""
        cached = getattr(self, "_duplicates_of", None)  # (a checkpoint of an older release has none)
        if cached is None or cached[0] is not matrix:
            cached = self._duplicates_of = (matrix, duplicate_columns(matrix))
        return cached[1]

    def _stored_ids(self, matrix: np.ndarray) -> list[str]:
        """The sample id of each row of the stacked matrix, cached with it."""
        cached = getattr(self, "_stored_ids_of", None)
        if cached is None or cached[0] is not matrix:
            stored = [sample_id for c in sorted(self._ids) for sample_id in self._ids[c]]  # the order of _matrix
            cached = self._stored_ids_of = (matrix, stored)
        return cached[1]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_duplicates_of", None)  # caches, rebuilt on use
        state.pop("_stored_ids_of", None)
        return state

    def nearest(self, vectors: np.ndarray, ids, n: int = 5, *, arrival: Mapping[str, int] | None = None,
                arrived: Sequence[int] | None = None) -> list[list[tuple[str, str, float]]]:
        """The ``n`` stored samples most similar to each query, as ``(sample_id, label, similarity)``, nearest first.

        Similarity is the cosine over standardised vectors that :meth:`predict_proba` votes with,
        rounded to 3 decimals. Stored samples with the query's own id are left out. With
        ``arrival`` (the stream position of stored sample ids; ids it lacks count as older than
        any query) and ``arrived`` (each query's own position), only stored samples that arrived
        before the query are returned. Empty lists while the index holds fewer than 2 samples.

        A shortlist from the float32 product is re-ranked in float64 row by row, so what a query
        gets depends neither on the other queries nor on the BLAS kernel; ties go to the earlier
        stored position.

        >>> classes = LabelIndex()
        >>> index = NeighborIndex(classes, standardize=False)
        >>> index.learn(np.array([[1, 0], [1, 1], [0, 1]], dtype=float), classes.encode("abb"), ["x", "y", "z"])
        >>> index.nearest(np.array([[1.0, 0.1], [0.0, 1.0]]), ["q", "z"], n=2)
        [[('x', 'a', 0.995), ('y', 'b', 0.774)], [('y', 'b', 0.707), ('x', 'a', 0.0)]]
        """
        ids = list(ids)
        if len(self) < 2 or len(ids) == 0 or n < 1:
            return [[] for _ in ids]
        matrix, owner, positions = self._matrix()
        stored = self._stored_ids(matrix)
        queries = self._scaler.transform(vectors) if self.standardize else np.asarray(vectors, dtype=np.float32)
        queries = _unit_rows(queries)
        sims = queries @ matrix.T  # float32: only to shortlist
        if arrival is not None:
            stored_at = np.fromiter((arrival.get(sample_id, -1) for sample_id in stored), dtype=np.int64,
                                    count=len(stored))
        out = []
        for row, sample_id in enumerate(ids):
            allowed = np.ones(len(stored), dtype=bool)
            allowed[positions.get(sample_id, [])] = False
            if arrival is not None:
                allowed &= stored_at < arrived[row]
            candidates = np.flatnonzero(allowed)
            if len(candidates) > n:  # a margin far above float32 rounding keeps every true top-n in
                shortlist = sims[row, candidates]
                candidates = candidates[shortlist >= np.partition(shortlist, len(shortlist) - n)[-n] - 1e-3]
            exact = (matrix[candidates].astype(np.float64) * queries[row].astype(np.float64)).sum(axis=1)
            best = np.lexsort((candidates, -exact))[:n]
            out.append([(stored[c], self.classes.labels[owner[c]], round(float(s), 3) + 0.0)
                        for c, s in zip(candidates[best].tolist(), exact[best].tolist())])
        return out

    def predict_proba(self, vectors: np.ndarray, ids, *, chunk: int = 512) -> np.ndarray:
        """Similarity-weighted label votes of the ``k`` nearest stored samples, rows summing to 1.

        A row is all zeros while the index holds too few samples to vote. Rows are searched in
        chunks of at most ``chunk``, spread over the cores (:func:`search_in_parallel`).
        """
        n_classes = len(self.classes)
        out = np.zeros((len(vectors), n_classes))
        if len(self) < 2 or len(vectors) == 0:
            return out
        matrix, owner, positions = self._matrix()
        duplicates = self._duplicates(matrix)
        queries = self._scaler.transform(vectors) if self.standardize else np.asarray(vectors, dtype=np.float32)
        queries = _unit_rows(queries)
        ids = list(ids)
        k = min(self.k, len(owner) - 1)

        def vote(start: int, stop: int) -> None:
            sims = queries[start:stop] @ matrix.T
            if duplicates is not None:
                sims = sims[:, duplicates]
            for row, sample_id in enumerate(ids[start:stop]):
                if sample_id in positions:  # leave the sample itself out of its vote
                    sims[row, positions[sample_id]] = -np.inf
            rows, columns, weights = nearest_with_ties(sims, k)
            cells = rows * n_classes + owner[columns]
            block = np.bincount(cells, weights=weights, minlength=(stop - start) * n_classes).reshape(-1, n_classes)
            out[start:stop] = block / np.maximum(block.sum(axis=1, keepdims=True), 1e-12)

        search_in_parallel(vote, len(queries), chunk)
        return out


def nearest_with_ties(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest columns of each row of ``sims``, as ``(rows, columns, weights)``, ties shared.

    A column more similar than the k-th votes with its similarity (at least 1e-6). Columns exactly
    as similar as the k-th share the places left among them, so which of two duplicates of
    different labels fills the last place depends on neither the column order nor how the
    selection runs. Without ties this is the plain top-k.

    >>> sims = np.array([[0.9, 0.5, 0.5, 0.1]], dtype=np.float32)
    >>> rows, columns, weights = nearest_with_ties(sims, 2)
    >>> columns.tolist(), weights.round(3).tolist()
    ([0, 1, 2], [0.9, 0.25, 0.25])
    """
    n = sims.shape[1]
    kth = np.partition(sims, n - k, axis=1)[:, n - k]
    rows, columns = np.nonzero(sims >= kth[:, None])
    values = sims[rows, columns].astype(np.float64)
    tied = values == kth[rows]
    n_tied = np.bincount(rows[tied], minlength=len(sims))
    share = (k - np.bincount(rows[~tied], minlength=len(sims))) / np.maximum(n_tied, 1)
    weights = np.where(np.isfinite(values), np.maximum(values, 0.0) + 1e-6, 0.0)
    return rows, columns, weights * np.where(tied, share[rows], 1.0)


def duplicate_columns(matrix: np.ndarray) -> np.ndarray | None:
    """For each row of ``matrix``, the first row identical to it; ``None`` when all rows differ.

    BLAS may compute a query's product with two identical rows by different code paths (their
    positions fall in different blocks), so duplicates can come out a float32 ulp apart. Reading
    every duplicate's similarity from one of them makes the tie exact, whatever the kernel.

    >>> duplicate_columns(np.array([[1.0, 0], [0, 1], [1.0, 0]])).tolist()
    [0, 1, 0]
    >>> duplicate_columns(np.eye(2)) is None
    True
    """
    first: dict[bytes, int] = {}
    canonical = np.fromiter((first.setdefault(row.tobytes(), i) for i, row in enumerate(matrix)),
                            dtype=np.int64, count=len(matrix))
    return None if len(first) == len(matrix) else canonical


_SEARCH_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
_MIN_ROWS_PER_THREAD = 64
_pool: ThreadPoolExecutor | None = None
_blas: ThreadpoolController | None = None


def search_in_parallel(work, n_rows: int, chunk: int) -> None:
    """Call ``work(start, stop)`` over ``n_rows`` rows in slices, on up to four threads.

    A neighbour search is a matrix product (multi-threaded by BLAS already) then an
    ``argpartition`` (single-threaded). Slices on threads, with BLAS on one thread each, keep
    every core busy in both: 1.3 to 1.5 times faster on 2 cores. Each row is computed the same way
    whichever slice it lands in, and ``work`` writes disjoint rows, so the result does not depend on
    the threads. The BLAS limit is process-wide while a search runs: searches are meant to come from
    one thread (the pipeline's).
    """
    global _pool, _blas
    slices = -(-n_rows // chunk)
    if _SEARCH_THREADS > 1 and n_rows >= 2 * _MIN_ROWS_PER_THREAD:  # a multiple of the threads, to keep each busy
        slices = -(-max(slices, _SEARCH_THREADS) // _SEARCH_THREADS) * _SEARCH_THREADS
    if slices <= 1 or _SEARCH_THREADS == 1:
        for start in range(0, n_rows, chunk):
            work(start, min(start + chunk, n_rows))
        return
    if _pool is None:
        _pool, _blas = ThreadPoolExecutor(_SEARCH_THREADS, thread_name_prefix="labelwatch-search"), ThreadpoolController()
    bounds = np.linspace(0, n_rows, slices + 1).astype(int).tolist()
    with _blas.limit(limits=1, user_api="blas"):
        for done in [_pool.submit(work, start, stop) for start, stop in zip(bounds, bounds[1:])]:
            done.result()


class NeighborSearch(Params):
    """The neighbour index, for detectors that vote with neighbours."""

    neighbors_k: int = Field(10, ge=1, description="Neighbours in each label vote.")
    neighbors_per_class: int = Field(1000, ge=2, description="Reservoir size of the neighbour index, per label.")


@register
class NeighborAgreement(Detector):
    """Flags samples whose nearest past neighbours mostly carry another label (SimiFeat-style).

    Training-free: a similarity-weighted vote of the ``k`` nearest samples seen *before* this one,
    from a bounded per-class reservoir (:class:`NeighborIndex`). The score is ``1 - p(label)``; a
    sample is flagged when another label wins at least ``agreement`` of the vote.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> detector = NeighborAgreement(k=5, warmup=10)
    >>> for _ in range(4):
    ...     which = rng.integers(0, 2, 30)
    ...     _ = detector.process_many(Batch.of(np.where(which[:, None] == 1, 3.0, -3.0) + rng.normal(size=(30, 4)),
    ...                                        ["ab"[w] for w in which]))
    >>> signal, = detector.score_many(Batch.of([[3.0, 3.0, 3.0, 3.0]], ["a"]))
    >>> (signal.flagged, signal.suggested_label, signal.score)
    (True, 'b', 1.0)
    """

    name = "neighbors"

    class Params(NeighborSearch):
        neighbor_agreement: float = Field(0.7, gt=0, le=1, description="Vote share the neighbors detector needs to flag.")

    @classmethod
    def from_params(cls, p: Params, seed: int) -> NeighborAgreement:
        return cls(k=p.neighbors_k, per_class=p.neighbors_per_class, agreement=p.neighbor_agreement, seed=seed)

    def __init__(self, *, k: int = 10, per_class: int = 1000, agreement: float = 0.7, warmup: int = 20,
                 seed: int = 0):
        self.k = k
        self.per_class = per_class
        self.agreement = agreement
        self.warmup = warmup
        self.seed = seed
        self._classes = LabelIndex()
        self.index = NeighborIndex(self._classes, k=k, per_class=per_class, seed=seed)
        self.n_learned = 0

    @property
    def neighbor_index(self) -> NeighborIndex:
        return self.index

    def __repr__(self) -> str:
        return f"NeighborAgreement(k={self.k}, per_class={self.per_class})"

    def _judge(self, batch: Batch) -> list[Signal]:
        label_ids = self._classes.encode(batch.labels)
        proba = self.index.predict_proba(batch.vectors, batch.keys())
        signals = []
        for row, label_id in zip(proba, label_ids.tolist()):
            if row.sum() == 0:
                signals.append(NEUTRAL)
                continue
            best = int(row.argmax())
            flagged = bool(best != label_id and row[best] >= self.agreement)
            suggested = self._classes.labels[best] if best != label_id else None
            signals.append(Signal(float(1.0 - row[label_id]), flagged, suggested,
                                  {"p_label": round(float(row[label_id]), 4), "neighbor_vote": round(float(row[best]), 4)}))
        return signals

    def score_many(self, batch: Batch) -> list[Signal]:
        if self.n_learned < self.warmup:
            return [NEUTRAL] * len(batch)
        return self._judge(batch)

    def rescore_many(self, batch: Batch, *, refit_thresholds: bool = False) -> list[Signal]:
        """Re-judge already learned samples; each is left out of its own vote."""
        return self.score_many(batch)

    def learn_many(self, batch: Batch) -> None:
        self.index.learn(batch.vectors, self._classes.encode(batch.labels), batch.keys())
        self.n_learned += len(batch)
