"""Searching again only what changed: each recent query's candidates (:class:`CandidateCache`), and the
proof that they still hold the full search's result (:class:`IncrementalSearch`).

A re-audit searches a sample that was searched before, a few learning steps ago. Since then some
rows were stored (newer stamps), some evicted, and the standardisation moved every row and the
query a little. Its cached candidates, the rows stored since, and a bound on everything else
(raised by how far the standardisation moved rows and query) decide the vote exactly whenever the
``k``-th similarity found beats that bound; otherwise the caller searches in full.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detectors.reservoir import Reservoir, Stacked
from detectors.search import vote
from detectors.shortlist import exact_similarities, float32_error, shortlist, shortlist_margin

HISTORY_VERSIONS = 32
"""Standardisations kept for cached searches (older ones dropped: their queries search in full)."""


class CandidateCache:
    """Per recent query (by sample id): its ``width`` nearest stored rows at its last search, and
    what a later search needs to prove that no other row can have overtaken them.

    An entry holds the rows' insertion ``stamps`` (``-1`` pads a short list), ``bound`` (no stored row
    outside the list was more similar than this, exactly, at that search), ``watermark`` (the first
    stamp not stored yet then: rows from there on are new), ``drift`` (the cumulative drift then,
    see :class:`IncrementalSearch`), the standardisation ``version`` and a ``fingerprint`` of the
    query vector. At most ``capacity`` entries: the least recently searched go first. Memory:
    ``capacity`` × (``width`` + 5) × 8 bytes, allocated on first use.

    >>> cache = CandidateCache(capacity=2, width=3)
    >>> cache.put(["a", "b", "c"], [1, 2, 3], np.array([[5, 6, -1]] * 3), np.zeros(3), 7, 0.0, 1)
    >>> cache.find(["a", "b", "c"], [1, 2, 9]).tolist()  # "a" evicted, "c" searched with another vector
    [-1, 1, -1]
    >>> cache.stamps[0].tolist(), len(cache)
    ([5, 6, -1], 2)
    """

    def __init__(self, capacity: int, width: int):
        self.capacity = capacity
        self.width = width
        self._slots: OrderedDict[str, int] = OrderedDict()
        self._free: list[int] = []
        self.stamps = np.zeros((0, width), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._slots)

    def _allocate(self) -> None:
        n = self.capacity
        self.stamps = np.full((n, self.width), -1, dtype=np.int64)
        self.bound = np.zeros(n)
        self.watermark = np.zeros(n, dtype=np.int64)
        self.drift = np.zeros(n)
        self.version = np.zeros(n, dtype=np.int64)
        self.fingerprint = np.zeros(n, dtype=np.int64)
        self._free = list(range(n - 1, -1, -1))

    def find(self, ids, fingerprints) -> np.ndarray:
        """The slot of each query's entry, or ``-1`` where it has none for that vector."""
        out = np.full(len(ids), -1, dtype=np.int64)
        for i, (sample_id, fingerprint) in enumerate(zip(ids, fingerprints)):
            slot = self._slots.get(sample_id)
            if slot is not None and self.fingerprint[slot] == fingerprint:
                out[i] = slot
        return out

    def put(self, ids, fingerprints, stamps: np.ndarray, bound: np.ndarray, watermark: int, drift: float,
            version: int) -> None:
        """Store (or replace) the entries of ``ids``, each now the most recently searched."""
        if self.capacity < 1 or not len(ids):
            return
        if not len(self.stamps):
            self._allocate()
        slots = np.empty(len(ids), dtype=np.int64)
        for i, sample_id in enumerate(ids):
            slot = self._slots.pop(sample_id, None)
            if slot is None:
                slot = self._free.pop() if self._free else self._slots.popitem(last=False)[1]
            self._slots[sample_id] = slots[i] = slot
        width = min(self.width, stamps.shape[1])
        self.stamps[slots] = -1
        self.stamps[slots, :width] = stamps[:, :width]
        self.bound[slots] = bound
        self.watermark[slots] = watermark
        self.drift[slots] = drift
        self.version[slots] = version
        self.fingerprint[slots] = np.asarray(fingerprints, dtype=np.int64)

    def oldest_version(self) -> int | None:
        """The earliest standardisation version an entry refers to (``None`` when empty)."""
        if not self._slots:
            return None
        return int(self.version[np.fromiter(self._slots.values(), dtype=np.int64, count=len(self._slots))].min())


@dataclass(frozen=True)
class Entries:
    """Cache entries to remember (:meth:`IncrementalSearch.remember`): per query its id, vector
    ``fingerprints``, candidate ``stamps`` and ``bound``, as of one search."""

    ids: list[str]
    fingerprints: list[int]
    stamps: np.ndarray
    bound: np.ndarray
    watermark: int
    drift: float
    version: int


@dataclass(frozen=True)
class Incremental:
    """What :meth:`IncrementalSearch.search` found: the ``votes`` of the ``settled`` queries (the full
    search's, exactly), and per other query ``(low, high)`` bounds on each label's share (``[0, 1]``
    where nothing is known; see :meth:`IncrementalSearch._bound_votes`). ``entries``: the settled
    queries' refreshed cache entries, which only :meth:`IncrementalSearch.remember` stores."""

    votes: np.ndarray
    settled: np.ndarray
    low: np.ndarray
    high: np.ndarray
    entries: list[Entries]


def fingerprints(vectors: np.ndarray) -> list[int]:
    """What the candidate cache tells a sample's vectors apart by (a re-annotation may change them)."""
    return [hash(row.tobytes()) for row in vectors]


class IncrementalSearch:
    """The candidates of the ``capacity`` most recently searched sample ids, and what proves them.

    Process-local: a restored index starts with an empty cache (its queries search in full).
    :meth:`restacked` must see every new stacking of the reservoir: it adds how far any stored row
    moved (the standardisation changed) to :attr:`drift`, and keeps each version's standardisation
    for the queries cached under it.
    """

    def __init__(self, capacity: int, width: int):
        self.cache = CandidateCache(capacity, width)
        self.drift = 0.0
        self._previous: Stacked | None = None
        self._history: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}

    def __getstate__(self) -> dict:
        return {"capacity": self.cache.capacity, "width": self.cache.width}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["capacity"], state["width"])

    @property
    def width(self) -> int:
        return self.cache.width

    def __len__(self) -> int:
        return len(self.cache)

    def before_learning(self, stacked: Stacked | None) -> None:
        """Keep ``stacked`` (the rows as last searched) to measure the next stacking's drift against."""
        if self._previous is None and len(self.cache):
            self._previous = stacked

    def restacked(self, stacked: Stacked, parameters) -> None:
        previous, self._previous = self._previous, None
        if previous is not None and len(self.cache):
            _, old, new = np.intersect1d(previous.stamps, stacked.stamps, assume_unique=True, return_indices=True)
            if len(old):
                moved = stacked.matrix[new] - previous.matrix[old]
                # float32 norms: a margin for their rounding
                self.drift += float(np.sqrt(np.einsum("ij,ij->i", moved, moved).max())) * (1 + 1e-4) + 1e-7
        self._history[stacked.version] = parameters
        oldest = self.cache.oldest_version()
        for version in sorted(self._history)[:-1]:  # what no entry refers to, and beyond the limit the oldest
            if oldest is None or version < oldest or len(self._history) > HISTORY_VERSIONS:
                del self._history[version]

    def entries(self, ids, prints, stamps: np.ndarray, bound: np.ndarray, reservoir: Reservoir,
                stacked: Stacked) -> Entries:
        """The cache entries of queries searched now, over ``stacked`` of ``reservoir``."""
        return Entries(list(ids), list(prints), stamps, bound, reservoir.n_stamped, self.drift, stacked.version)

    def remember(self, entries: Sequence[Entries]) -> None:
        """Store the candidates of searches made (:class:`Entries`), each query now the most recent."""
        for e in entries:
            self.cache.put(e.ids, e.fingerprints, e.stamps, e.bound, e.watermark, e.drift, e.version)

    def search(self, reservoir: Reservoir, stacked: Stacked, vectors: np.ndarray, queries: np.ndarray,
               ids: list[str], prints: list[int], k: int, n_classes: int, *, bounds: bool = False) -> Incremental:
        """The votes of the queries whose cached candidates prove the full search's result; with
        ``bounds``, also bound the vote of the others where the candidates allow it. Changes nothing."""
        n = len(ids)
        votes, settled = np.zeros((n, n_classes)), np.zeros(n, dtype=bool)
        low, high = np.zeros((n, n_classes)), np.ones((n, n_classes))
        entries: list[Entries] = []
        slots = self.cache.find(ids, prints)
        found = np.flatnonzero(slots >= 0)
        if not len(found):
            return Incremental(votes, settled, low, high, entries)
        keys = np.stack([self.cache.version[slots[found]], self.cache.watermark[slots[found]]], axis=1)
        for version, watermark in np.unique(keys, axis=0).tolist():
            if version not in self._history or 2 * np.count_nonzero(stacked.stamps >= watermark) > len(stacked.stamps):
                continue  # (its standardisation forgotten, or half the rows new: a full search costs no more)
            group = found[(keys[:, 0] == version) & (keys[:, 1] == watermark)]
            entries += self._since(reservoir, stacked, vectors[group], queries[group], [ids[i] for i in group],
                                   [prints[i] for i in group], slots[group], version, watermark, k, n_classes,
                                   group, votes, settled, (low, high) if bounds else None)
        return Incremental(votes, settled, low, high, entries)

    def _since(self, reservoir, stacked, vectors, here, ids, prints, slots, version, watermark, k, n_classes,
               group, votes, settled, bounds) -> list[Entries]:
        """:meth:`search` for the queries last searched under one ``version`` and ``watermark``: their
        kept candidates and the rows stored since. Writes the settled ones' votes (and the others'
        bounds) at ``group``'s rows; returns the settled ones' refreshed entries."""
        cache, matrix = self.cache, stacked.matrix
        width, error = cache.width, float32_error(matrix.shape[1])
        limit = cache.bound[slots] + 1e-9  # no row outside the candidates was more similar at the last search...
        if version != stacked.version:  # ...nor since, by more than how far the standardisation moved it and the query
            then = reservoir.unit(vectors, self._history[version])
            moved = np.linalg.norm(here.astype(np.float64) - then, axis=1)
            limit += (moved + self.drift - cache.drift[slots]) * (1 + 1e-5)
        at = stacked.position_of(cache.stamps[slots])  # the candidates still stored
        sims = np.empty(at.shape, dtype=np.float32)
        for start in range(0, len(ids), 64):  # gathered 64 queries at a time: it stays in the cache
            rows = slice(start, start + 64)
            sims[rows] = np.einsum("qcd,qd->qc", matrix[np.maximum(at[rows], 0)], here[rows])
        sims[at < 0] = -np.inf
        new = np.flatnonzero(stacked.stamps >= watermark)  # the rows stored since
        if len(new):
            fresh = here @ matrix[new].T
            own = [(row, int(np.searchsorted(new, position))) for row, sample_id in enumerate(ids)
                   for position in stacked.positions.get(sample_id, ()) if stacked.stamps[position] >= watermark]
            if own:  # leave each sample itself out of its vote
                fresh[tuple(np.array(own).T)] = -np.inf
            sims = np.concatenate([sims, fresh], axis=1)
        done = np.isfinite(sims).sum(axis=1) > k
        if sims.shape[1] <= k or not done.any():
            return []

        def stored_row(rows: np.ndarray, places: np.ndarray) -> np.ndarray:  # columns: the candidates, then the new rows
            if not len(new):
                return at[rows, places]
            return np.where(places < width, at[rows, np.minimum(places, width - 1)],
                            new[np.clip(places - width, 0, len(new) - 1)])

        found = shortlist(sims, stored_row, k, min(width, sims.shape[1] - 1), margin=shortlist_margin(matrix.shape[1]))
        exact = exact_similarities(matrix, here, found.rows, found.columns)
        these, kth = vote(stacked, here, found.rows, found.columns, k, n_classes, exact)
        done &= kth > limit  # every row left out is below the k-th, strictly: the full search's vote
        votes[group[done]] = these[done]
        settled[group[done]] = True
        if bounds is not None and not done.all():
            self._bound_votes(stacked, found, exact, limit, k, ~done, group, bounds)
        bound = np.maximum(limit, found.beyond.astype(np.float64) + error)
        kept = np.flatnonzero(done).tolist()
        return [self.entries([ids[i] for i in kept], [prints[i] for i in kept], stacked.stamps_of(found.best[done]),
                             bound[done], reservoir, stacked)]

    @staticmethod
    def _bound_votes(stacked: Stacked, found, exact: np.ndarray, limit: np.ndarray, k: int, unsettled: np.ndarray,
                     group: np.ndarray, bounds: tuple[np.ndarray, np.ndarray]) -> None:
        """Bound the votes of the ``unsettled`` queries (rows of ``group``) of :meth:`_since`, whose
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
