"""Nearest-neighbour label agreement over a bounded, per-class reservoir of past samples."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from detectors.base import NEUTRAL, Batch, Detector, LabelIndex, Signal
from detectors.hnsw import HnswGraph, _hnswlib
from detectors.registry import Params, register
from detectors.threads import SEARCH_THREADS, search_in_parallel
from detectors.shortlist import (CandidateCache, Stacked, exact_similarities, float32_error, shortlist, shortlist_margin,
                                 vote_with_ties)


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

    def parameters(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mean, std)`` as :meth:`transform` applies them now (``None`` before any update)."""
        if self.mean is None:
            return None
        std = np.sqrt(self._m2 / max(self.n, 1))
        return self.mean, np.where(std > 1e-6, std, 1.0)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return standardized(x, self.parameters())


def standardized(x: np.ndarray, parameters: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """``x`` standardised with ``(mean, std)`` (:meth:`RunningStandardizer.parameters`), as float32."""
    if parameters is None:
        return np.asarray(x, dtype=np.float32)
    mean, std = parameters
    out = np.subtract(x, mean)  # float64, as the statistics: one buffer, divided in place
    np.divide(out, std, out=out)
    return out.astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)


SEARCHES = ("brute", "hnsw")
"""How a :class:`NeighborIndex` shortlists: a float32 product with every stored row (exact), or an
HNSW graph (:mod:`detectors.hnsw`, approximate, for reservoirs far larger than the default)."""

CANDIDATE_MARGIN = 50
"""Candidates a query keeps beyond its ``k`` neighbours: room for evictions, and a bound on the others
far enough below the ``k``-th similarity that the standardisation's drift rarely reaches it."""

HISTORY_VERSIONS = 32
"""Standardisations kept for cached searches (older ones dropped: their queries search in full)."""


class NeighborIndex:
    """A bounded index of past samples that votes on labels by cosine similarity.

    Each label keeps a reservoir of at most ``per_class`` samples (Algorithm R, seeded), so memory
    is bounded however long the stream runs while the reservoir stays a uniform sample of that
    label's history. Vectors are standardised with running statistics, then compared by cosine.
    A query never votes with a stored sample of the same id (leave-one-out), so re-scoring an
    already learned sample stays out of sample.

    **Searches.** A float32 matrix product shortlists stored rows, and the vote is taken on their
    exact (float64) similarities (:mod:`detectors.shortlist`), so it depends neither on the BLAS
    kernel nor on how the rows were found. A search keeps each query's ``k`` +
    :data:`CANDIDATE_MARGIN` best rows and a bound on all the others (for the ``cache_size`` most
    recently searched sample ids). Re-scoring with ``reuse=True`` (a re-audit) then searches only
    the kept candidates still stored and the rows stored since, and proves the result is the full
    search's: the ``k``-th similarity found must beat the bound, raised by how far the learning
    steps since moved the query and any stored row (they change the standardisation; the drift of
    the rows is measured at every step). Where the proof fails (too many candidates evicted, the
    statistics moved too much) the query is searched in full.

    >>> classes = LabelIndex()
    >>> index = NeighborIndex(classes, k=3)
    >>> index.learn(np.array([[0, 1], [0, 2], [5, 0], [6, 0]], dtype=float), classes.encode("aabb"), ["1", "2", "3", "4"])
    >>> index.predict_proba(np.array([[0.0, 1.5]]), ["q"]).round(2).tolist()
    [[1.0, 0.0]]
    """

    def __init__(self, classes: LabelIndex, *, k: int = 10, per_class: int = 1000, standardize: bool = True,
                 seed: int = 0, cache_size: int = 10_000, search: str = "brute"):
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        if search == "hnsw":
            _hnswlib()  # fail now, with what to install, rather than at the first search
        self.classes = classes
        self.k = k
        self.per_class = per_class
        self.standardize = standardize
        self.seed = seed
        self.cache_size = cache_size
        self.search = search
        self._rng = np.random.default_rng(seed)
        self._scaler = RunningStandardizer()
        self._vectors: dict[int, np.ndarray] = {}
        self._ids: dict[int, list[str]] = {}
        self._stamps: dict[int, np.ndarray] = {}  # per label and slot: when the sample there was stored
        self._seen: dict[int, int] = {}
        self._n_stamped = 0
        self._version = 0  # learning steps: each changes the standardisation
        self._graph: HnswGraph | None = None
        self._stacked: Stacked | None = None
        self._start_searching()

    def _start_searching(self) -> None:
        """The process-local search state: the candidate cache and what its proofs need (empty after a restore)."""
        self._cache = CandidateCache(self.cache_size, self.k + CANDIDATE_MARGIN)
        self._previous: Stacked | None = None
        self._drift = 0.0
        self._history: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}
        self.search_counts: Counter = Counter()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for cache in ("_stacked", "_previous", "_cache", "_drift", "_history", "search_counts"):
            del state[cache]  # rebuilt on use
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        for cache in ("_duplicates_of", "_stored_ids_of"):  # (caches an older release pickled)
            self.__dict__.pop(cache, None)
        if "_stamps" not in state:  # an older release's checkpoint
            self.seed, self.cache_size, self.search, self._graph, self._version = 0, 10_000, "brute", None, 0
            self._stamps, self._n_stamped = {}, 0
            for label in sorted(self._ids):  # stamped in stacking order
                stamps = self._stamps[label] = np.full(self.per_class, -1, dtype=np.int64)
                n = len(self._ids[label])
                stamps[:n] = np.arange(self._n_stamped, self._n_stamped + n)
                self._n_stamped += n
        self._stacked = None
        self._start_searching()

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._ids.values())

    def cache_candidates(self, n: int) -> None:
        """Keep the candidates of the ``n`` most recently searched sample ids (0: every search is full).

        A monitor re-audits samples up to ``reaudit_window`` old, and sets that."""
        if n != self.cache_size:
            self.cache_size = n
            self._cache = CandidateCache(n, self.k + CANDIDATE_MARGIN)

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
                    self._stamps[label] = np.full(self.per_class, -1, dtype=np.int64)
                store[seen] = vector
                self._ids[label].append(sample_id)
                self._stamps[label][seen] = self._n_stamped
                self._n_stamped += 1
            else:
                slot = int(self._rng.integers(0, seen + 1))
                if slot < self.per_class:
                    self._vectors[label][slot] = vector
                    self._ids[label][slot] = sample_id
                    self._stamps[label][slot] = self._n_stamped
                    self._n_stamped += 1
            self._seen[label] = seen + 1
        if self._previous is None and len(self._cache):
            self._previous = self._stacked  # what the next stacking measures the drift against
        self._stacked = None
        self._version += 1

    def _unit_queries(self, vectors: np.ndarray, parameters=False) -> np.ndarray:
        """``vectors`` standardised (with ``parameters``, by default the current ones) as unit float32 rows."""
        if not self.standardize:
            return _unit_rows(np.asarray(vectors, dtype=np.float32))
        return _unit_rows(standardized(vectors, self._scaler.parameters() if parameters is False else parameters))

    def _matrix(self) -> Stacked:
        if self._stacked is None:
            previous, self._previous = self._previous, None
            labels = sorted(self._ids)
            owner = np.concatenate([np.full(len(self._ids[c]), c) for c in labels])
            stamps = np.concatenate([self._stamps[c][: len(self._ids[c])] for c in labels])
            positions: dict[str, list[int]] = {}
            for position, sample_id in enumerate(i for c in labels for i in self._ids[c]):
                positions.setdefault(sample_id, []).append(position)
            matrix = self._unit_queries(np.vstack([self._vectors[c][: len(self._ids[c])] for c in labels]))
            self._stacked = Stacked(matrix, owner, stamps, positions, self._version)
            self._measure_drift(previous)
            if self.search == "hnsw":
                if self._graph is None:
                    self._graph = HnswGraph(matrix.shape[1], seed=self.seed)
                self._graph.sync(matrix, stamps)
        return self._stacked

    def _measure_drift(self, previous: Stacked | None) -> None:
        """Add to :attr:`_drift` how far any stored row moved since the last stacking (the standardisation
        changed); remember this version's standardisation for the queries cached under it."""
        stacked = self._stacked
        if previous is not None and len(self._cache):
            _, old, new = np.intersect1d(previous.stamps, stacked.stamps, assume_unique=True, return_indices=True)
            if len(old):
                moved = stacked.matrix[new] - previous.matrix[old]
                # float32 norms: a margin for their rounding
                self._drift += float(np.sqrt(np.einsum("ij,ij->i", moved, moved).max())) * (1 + 1e-4) + 1e-7
        self._history[stacked.version] = self._scaler.parameters() if self.standardize else None
        oldest = self._cache.oldest_version()
        for version in sorted(self._history)[:-1]:  # what no entry refers to, and beyond the limit the oldest
            if oldest is None or version < oldest or len(self._history) > HISTORY_VERSIONS:
                del self._history[version]

    def _stored_ids(self, stacked: Stacked) -> list[str]:
        """The sample id of each row of the stacked matrix, cached with it."""
        if stacked.stored_ids is None:
            stacked.stored_ids = [sample_id for c in sorted(self._ids) for sample_id in self._ids[c]]
        return stacked.stored_ids

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
        stacked = self._matrix()
        matrix, owner, positions = stacked.matrix, stacked.owner, stacked.positions
        stored = self._stored_ids(stacked)
        queries = self._unit_queries(vectors)
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

    def predict_proba(self, vectors: np.ndarray, ids, *, chunk: int = 512, reuse: bool = False) -> np.ndarray:
        """Similarity-weighted label votes of the ``k`` nearest stored samples, rows summing to 1.

        A row is all zeros while the index holds too few samples to vote. Rows are searched in
        chunks of at most ``chunk``, spread over the cores (:func:`search_in_parallel`). With
        ``reuse`` (re-scoring samples searched before), a query with cached candidates searches
        only what changed since, with the same result as a full search (see the class).
        """
        out = np.zeros((len(vectors), len(self.classes)))
        if len(self) < 2 or len(vectors) == 0:
            return out
        stacked = self._matrix()
        queries = self._unit_queries(vectors)
        ids = list(ids)
        k = min(self.k, len(stacked.owner) - 1)
        if self.search == "hnsw" and self._large(stacked):
            self._search_graph(queries, ids, k, stacked, out)
            self.search_counts["graph"] += len(ids)
            return out
        caching = self._caching(stacked)
        fingerprints = _fingerprints(vectors) if caching else None
        todo = np.arange(len(ids))
        if reuse and caching and len(self._cache):
            todo = self._search_cached(vectors, queries, ids, fingerprints, k, stacked, out)
        if len(todo):
            self._search_full(queries, ids, fingerprints, todo, k, stacked, out, chunk)
        self.search_counts["full"] += len(todo)
        self.search_counts["incremental"] += len(ids) - len(todo)
        return out

    def _large(self, stacked: Stacked) -> bool:
        """Whether ``stacked`` holds enough rows for the graph, or the candidate cache, to pay."""
        return len(stacked.owner) > 4 * self._cache.width

    def _caching(self, stacked: Stacked) -> bool:
        """Whether searches over ``stacked`` keep (and re-audits reuse) candidates."""
        return self._large(stacked) and self._cache.capacity > 0

    @staticmethod
    def _vote(stacked: Stacked, queries: np.ndarray, rows: np.ndarray, columns: np.ndarray, k: int,
              out: np.ndarray, exact: np.ndarray | None = None) -> np.ndarray:
        """``out``: the votes of each query's ``k`` nearest among its shortlisted stored rows (the pairs
        ``(rows, columns)``), on their ``exact`` similarities (computed here unless given); returns each
        query's ``k``-th similarity."""
        n_classes = out.shape[1]
        if exact is None:
            exact = exact_similarities(stacked.matrix, queries, rows, columns)
        rows, columns, weights, kth = vote_with_ties(rows, columns, exact, k, len(queries))
        cells = rows * n_classes + stacked.owner[columns]
        block = np.bincount(cells, weights=weights, minlength=len(queries) * n_classes).reshape(-1, n_classes)
        out[:] = block / np.maximum(block.sum(axis=1, keepdims=True), 1e-12)
        return kth

    def _search_full(self, queries: np.ndarray, ids: list[str], fingerprints: list[int] | None, todo: np.ndarray,
                     k: int, stacked: Stacked, out: np.ndarray, chunk: int) -> None:
        """Search the rows ``todo`` against every stored row; keep their candidates when ``fingerprints``."""
        matrix, positions = stacked.matrix, stacked.positions
        width = self._cache.width if fingerprints is not None else 0
        error = float32_error(matrix.shape[1])
        kept: dict[int, tuple] = {}

        def search(start: int, stop: int) -> None:
            rows = todo[start:stop]
            sims = queries[rows] @ matrix.T  # float32: only to shortlist
            own = [(row, column) for row, i in enumerate(rows.tolist()) for column in positions.get(ids[i], ())]
            if own:  # leave each sample itself out of its vote
                sims[tuple(np.array(own).T)] = -np.inf
            found = shortlist(sims, None, k, width, margin=shortlist_margin(matrix.shape[1]))
            votes = np.zeros((len(rows), out.shape[1]))
            self._vote(stacked, queries[rows], found.rows, found.columns, k, votes)
            out[rows] = votes
            if width:
                kept[start] = (rows, stacked.stamps_of(found.best), found.beyond.astype(np.float64) + error)

        search_in_parallel(search, len(todo), chunk)
        for start in sorted(kept):  # in query order, whatever order the threads finished in
            rows, stamps, bound = kept[start]
            self._cache.put([ids[i] for i in rows.tolist()], [fingerprints[i] for i in rows.tolist()], stamps, bound,
                            self._n_stamped, self._drift, stacked.version)

    def _search_graph(self, queries: np.ndarray, ids: list[str], k: int, stacked: Stacked, out: np.ndarray) -> None:
        """Vote among the candidates the HNSW graph proposes, on their exact similarities."""
        at = stacked.position_of(self._graph.candidates(queries, self._cache.width, threads=SEARCH_THREADS))
        rows, places = np.nonzero(at >= 0)
        columns = at[rows, places]
        n_stored = len(stacked.owner)
        own = [row * n_stored + p for row, sample_id in enumerate(ids) for p in stacked.positions.get(sample_id, ())]
        if own:  # leave each sample itself out of its vote
            keep = ~np.isin(rows * n_stored + columns, own)
            rows, columns = rows[keep], columns[keep]
        self._vote(stacked, queries, rows, columns, k, out)

    def _search_cached(self, vectors: np.ndarray, queries: np.ndarray, ids: list[str], fingerprints: list[int],
                       k: int, stacked: Stacked, out: np.ndarray, bounds: tuple | None = None) -> np.ndarray:
        """Vote for the queries whose cached candidates prove the full search's result; returns the others.
        With ``bounds`` (low, high), also bound the vote of the others where the candidates allow it."""
        cache = self._cache
        slots = cache.find(ids, fingerprints)
        found = np.flatnonzero(slots >= 0)
        done = np.zeros(len(ids), dtype=bool)
        if not len(found):
            return np.arange(len(ids))
        keys = np.stack([cache.version[slots[found]], cache.watermark[slots[found]]], axis=1)
        for version, watermark in np.unique(keys, axis=0).tolist():
            if version not in self._history or 2 * np.count_nonzero(stacked.stamps >= watermark) > len(stacked.stamps):
                continue  # (its standardisation forgotten, or half the rows new: a full search costs no more)
            group = found[(keys[:, 0] == version) & (keys[:, 1] == watermark)]
            settled = self._search_since(vectors, queries, ids, fingerprints, group, slots[group], version, watermark,
                                         k, stacked, out, bounds)
            done[group[settled]] = True
        return np.flatnonzero(~done)

    def _search_since(self, vectors, queries, ids, fingerprints, group, slots, version, watermark, k, stacked,
                      out, bounds=None) -> np.ndarray:
        """:meth:`_search_cached` for the queries last searched under one ``version`` and ``watermark``:
        their kept candidates and the rows stored since. Returns which of them it settled, and bounds
        the vote of the others into ``bounds`` (see :meth:`vote_bounds`)."""
        cache, matrix = self._cache, stacked.matrix
        width, error = cache.width, float32_error(matrix.shape[1])
        here = queries[group]
        limit = cache.bound[slots] + 1e-9  # no row outside the candidates was more similar at the last search...
        if version != stacked.version:  # ...nor since, by more than how far the standardisation moved it and the query
            then = self._unit_queries(vectors[group], self._history[version])
            moved = np.linalg.norm(here.astype(np.float64) - then, axis=1)
            limit += (moved + self._drift - cache.drift[slots]) * (1 + 1e-5)
        at = stacked.position_of(cache.stamps[slots])  # the candidates still stored
        sims = np.empty(at.shape, dtype=np.float32)
        for start in range(0, len(group), 64):  # gathered 64 queries at a time: it stays in the cache
            rows = slice(start, start + 64)
            sims[rows] = np.einsum("qcd,qd->qc", matrix[np.maximum(at[rows], 0)], here[rows])
        sims[at < 0] = -np.inf
        new = np.flatnonzero(stacked.stamps >= watermark)  # the rows stored since
        if len(new):
            fresh = here @ matrix[new].T
            own = [(row, int(np.searchsorted(new, position))) for row, i in enumerate(group.tolist())
                   for position in stacked.positions.get(ids[i], ()) if stacked.stamps[position] >= watermark]
            if own:  # leave each sample itself out of its vote
                fresh[tuple(np.array(own).T)] = -np.inf
            sims = np.concatenate([sims, fresh], axis=1)
        settled = np.isfinite(sims).sum(axis=1) > k
        if sims.shape[1] <= k or not settled.any():
            return np.zeros(len(group), dtype=bool)

        def stored_row(rows: np.ndarray, places: np.ndarray) -> np.ndarray:  # columns: the candidates, then the new rows
            if not len(new):
                return at[rows, places]
            return np.where(places < width, at[rows, np.minimum(places, width - 1)],
                            new[np.clip(places - width, 0, len(new) - 1)])

        found = shortlist(sims, stored_row, k, min(width, sims.shape[1] - 1), margin=shortlist_margin(matrix.shape[1]))
        votes = np.zeros((len(group), out.shape[1]))
        exact = exact_similarities(matrix, here, found.rows, found.columns)
        kth = self._vote(stacked, here, found.rows, found.columns, k, votes, exact)
        settled &= kth > limit  # every row left out is below the k-th, strictly: the full search's vote
        out[group[settled]] = votes[settled]
        if bounds is not None and not settled.all():
            self._bound_votes(stacked, found, exact, limit, k, ~settled, group, bounds)
        bound = np.maximum(limit, found.beyond.astype(np.float64) + error)
        cache.put([ids[i] for i in group[settled].tolist()], [fingerprints[i] for i in group[settled].tolist()],
                  stacked.stamps_of(found.best[settled]), bound[settled], self._n_stamped, self._drift, stacked.version)
        return settled


    @staticmethod
    def _bound_votes(stacked: Stacked, found, exact: np.ndarray, limit: np.ndarray, k: int, unsettled: np.ndarray,
                     group: np.ndarray, bounds: tuple[np.ndarray, np.ndarray]) -> None:
        """Bound the votes of the ``unsettled`` queries (rows of ``group``) of :meth:`_search_since`, whose
        shortlisted pairs ``found`` have the ``exact`` similarities.

        Every stored row more similar than a query's ``limit`` is among its shortlisted pairs (the
        others are below the ``k``-th found, which is at most the limit), so those rows, ``m < k`` of
        them, are exactly the nearest ones, at full weight. The other ``k - m`` places go to rows at
        most ``limit`` similar, of unknown labels: each weighs at most ``limit`` (plus the vote's 1e-6).
        """
        low, high = bounds
        n_classes, n_queries = low.shape[1], len(limit)
        above = exact > limit[found.rows]
        rows, owners = found.rows[above], stacked.owner[found.columns[above]]
        weights = np.maximum(exact[above], 0.0) + 1e-6
        known = np.bincount(rows * n_classes + owners, weights=weights,
                            minlength=n_queries * n_classes).reshape(-1, n_classes)
        free = np.maximum(k - np.bincount(rows, minlength=n_queries), 0) * (np.maximum(limit, 0.0) + 1e-6)
        total = known.sum(axis=1) + free
        proven = unsettled & (total > 0)
        at = group[proven]
        low[at] = known[proven] / total[proven, None]
        high[at] = (known[proven] + free[proven, None]) / total[proven, None]

    def vote_bounds(self, vectors: np.ndarray, ids) -> VoteBounds:
        """Per query, bounds on each label's share of the vote that ``predict_proba(reuse=True)``
        gives, from the cached candidates alone (never a full search).

        A query whose candidates prove the full search's result gets it exactly (``exact``, and
        ``low == high``); one whose candidates still show its nearest rows gets their weight as a
        floor and the rest of the vote as slack; one without a cache entry gets ``[0, 1]``. A ``low``
        row summing to 0 also allows no vote at all. A re-audit's proof that it cannot flag a sample
        starts from this (:meth:`~detectors.ConfidentLearning.reaudit`).
        """
        n_classes = len(self.classes)
        low, high = np.zeros((len(vectors), n_classes)), np.ones((len(vectors), n_classes))
        exact = np.zeros(len(vectors), dtype=bool)
        if len(self) < 2 or len(vectors) == 0:
            return VoteBounds(low, high, exact)
        stacked = self._matrix()
        if not (self._caching(stacked) and len(self._cache)) or self.search == "hnsw":
            return VoteBounds(low, high, exact)
        ids = list(ids)
        k = min(self.k, len(stacked.owner) - 1)
        fingerprints = _fingerprints(vectors)
        votes = np.zeros((len(vectors), n_classes))
        left = self._search_cached(vectors, self._unit_queries(vectors), ids, fingerprints, k, stacked, votes,
                                   (low, high))
        exact[:] = True
        exact[left] = False
        low[exact], high[exact] = votes[exact], votes[exact]
        self.search_counts["bounded"] += len(ids)
        self.search_counts["incremental"] += int(exact.sum())  # (each an exact search, of what changed only)
        return VoteBounds(low, high, exact)


@dataclass(frozen=True)
class VoteBounds:
    """What :meth:`NeighborIndex.vote_bounds` found: per query and label, ``low`` and ``high`` bounds on
    the label's share of the vote, and the queries whose vote is known ``exact``ly (``low`` is it)."""

    low: np.ndarray
    high: np.ndarray
    exact: np.ndarray


def _fingerprints(vectors: np.ndarray) -> list[int]:
    """What the candidate cache tells a sample's vectors apart by (a re-annotation may change them)."""
    return [hash(row.tobytes()) for row in vectors]


class NeighborSearch(Params):
    """The neighbour index, for detectors that vote with neighbours."""

    neighbors_k: int = Field(10, ge=1, description="Neighbours in each label vote.")
    neighbors_per_class: int = Field(1000, ge=2, description="Reservoir size of the neighbour index, per label.")
    neighbor_search: Literal["brute", "hnsw"] = Field(
        "brute", description="How neighbours are found: brute (every stored sample, exact) or hnsw (an approximate "
                             "HNSW graph for reservoirs far above the default; needs the `ann` extra, hnswlib).")


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
        return cls(k=p.neighbors_k, per_class=p.neighbors_per_class, agreement=p.neighbor_agreement, seed=seed,
                   search=p.neighbor_search)

    def __init__(self, *, k: int = 10, per_class: int = 1000, agreement: float = 0.7, warmup: int = 20,
                 seed: int = 0, search: str = "brute"):
        self.k = k
        self.per_class = per_class
        self.agreement = agreement
        self.warmup = warmup
        self.seed = seed
        self._classes = LabelIndex()
        self.index = NeighborIndex(self._classes, k=k, per_class=per_class, seed=seed, search=search)
        self.n_learned = 0

    @property
    def neighbor_index(self) -> NeighborIndex:
        return self.index

    def __repr__(self) -> str:
        return f"NeighborAgreement(k={self.k}, per_class={self.per_class})"

    def _judge(self, batch: Batch, *, reuse: bool = False) -> list[Signal]:
        label_ids = self._classes.encode(batch.labels)
        proba = self.index.predict_proba(batch.vectors, batch.keys(), reuse=reuse)
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

    def reaudit(self, batch: Batch, *, final: bool = False, prove: bool = True) -> list[Signal]:
        """Re-judge already learned samples; each is left out of its own vote."""
        if self.n_learned < self.warmup:
            return [NEUTRAL] * len(batch)
        return self._judge(batch, reuse=True)

    def learn_many(self, batch: Batch) -> None:
        self.index.learn(batch.vectors, self._classes.encode(batch.labels), batch.keys())
        self.n_learned += len(batch)
