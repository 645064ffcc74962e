"""Nearest-neighbour label agreement over a bounded, per-class reservoir of past samples."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from detectors import search as exact_search
from detectors.base import NEUTRAL, Batch, Detector, LabelIndex, Signal
from detectors.hnsw import HnswGraph, _hnswlib
from detectors.incremental import IncrementalSearch, fingerprints
from detectors.registry import Params, register
from detectors.reservoir import Reservoir, RunningStandardizer, Stacked

__all__ = ["NeighborAgreement", "NeighborIndex", "NeighborSearch", "RunningStandardizer", "VoteBounds"]


SEARCHES = ("brute", "hnsw")
"""How a :class:`NeighborIndex` shortlists: a float32 product with every stored row (exact), or an
HNSW graph (:mod:`detectors.hnsw`, approximate, for reservoirs far larger than the default)."""

CANDIDATE_MARGIN = 50
"""Candidates a query keeps beyond its ``k`` neighbours: room for evictions, and a bound on the others
far enough below the ``k``-th similarity that the standardisation's drift rarely reaches it."""


class NeighborIndex:
    """A bounded index of past samples that votes on labels by cosine similarity.

    Three parts, each with its own state: the :class:`~detectors.reservoir.Reservoir` stores and
    standardises the samples; the exact search (:mod:`detectors.search`) shortlists stored rows by
    a float32 product and votes on their exact (float64) similarities, so the vote depends neither
    on the BLAS kernel nor on how the rows were found; the :class:`~detectors.incremental.IncrementalSearch`
    keeps each recently searched query's ``k`` + :data:`CANDIDATE_MARGIN` best rows, so that a
    re-audit (``reuse=True``) searches only what changed since, with the full search's result
    whenever it proves it, and in full otherwise. Only the reservoir is saved in a checkpoint.

    A query never votes with a stored sample of the same id (leave-one-out), so re-scoring an
    already learned sample stays out of sample.

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
        self.seed = seed
        self.search = search
        self.reservoir = Reservoir(per_class, standardize=standardize, seed=seed)
        self.incremental = IncrementalSearch(cache_size, k + CANDIDATE_MARGIN)
        self._graph: HnswGraph | None = None
        self._synced = -1  # the reservoir version the incremental search (and graph) last saw
        self.search_counts: Counter = Counter()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_synced": -1, "search_counts": Counter()}

    def __setstate__(self, state: dict) -> None:
        if "reservoir" not in state:  # an older release kept the reservoir's fields (and caches) itself
            for cache in ("_stacked", "_previous", "_cache", "_drift", "_history", "search_counts",
                          "_duplicates_of", "_stored_ids_of"):
                state.pop(cache, None)
            state = {"classes": state["classes"], "k": state["k"], "seed": state.get("seed", 0),
                     "search": state.get("search", "brute"), "reservoir": Reservoir.restored(state),
                     "incremental": IncrementalSearch(state.get("cache_size", 10_000), state["k"] + CANDIDATE_MARGIN),
                     "_graph": state.get("_graph")}
        self.__dict__.update({**state, "_synced": -1, "search_counts": Counter()})

    def __len__(self) -> int:
        return len(self.reservoir)

    @property
    def per_class(self) -> int:
        return self.reservoir.per_class

    def cache_candidates(self, n: int) -> None:
        """Keep the candidates of the ``n`` most recently searched sample ids (0: every search is full).

        A monitor re-audits samples up to ``reaudit_window`` old, and sets that."""
        if n != self.incremental.cache.capacity:
            self.incremental = IncrementalSearch(n, self.k + CANDIDATE_MARGIN)

    def learn(self, vectors: np.ndarray, label_ids: np.ndarray, ids) -> None:
        self.incremental.before_learning(self.reservoir.peek())
        self.reservoir.learn(vectors, label_ids, ids)

    def _stacked(self) -> Stacked:
        """The reservoir's stacked rows; each new stacking is shown to the incremental search and the graph."""
        stacked = self.reservoir.stacked()
        if stacked.version != self._synced:
            self.incremental.restacked(stacked, self.reservoir.parameters())
            if self.search == "hnsw":
                if self._graph is None:
                    self._graph = HnswGraph(stacked.matrix.shape[1], seed=self.seed)
                self._graph.sync(stacked.matrix, stacked.stamps)
            self._synced = stacked.version
        return stacked

    def nearest(self, vectors: np.ndarray, ids, n: int = 5, *, arrival: Mapping[str, int] | None = None,
                arrived: Sequence[int] | None = None) -> list[list[tuple[str, str, float]]]:
        """The ``n`` stored samples most similar to each query, as ``(sample_id, label, similarity)``, nearest first.

        Similarity is the cosine over standardised vectors that :meth:`predict_proba` votes with,
        rounded to 3 decimals. Stored samples with the query's own id are left out. With
        ``arrival`` (the stream position of stored sample ids; ids it lacks count as older than
        any query) and ``arrived`` (each query's own position), only stored samples that arrived
        before the query are returned. Empty lists while the index holds fewer than 2 samples.
        Ties go to the earlier stored position (:func:`detectors.search.nearest`).

        >>> classes = LabelIndex()
        >>> index = NeighborIndex(classes, standardize=False)
        >>> index.learn(np.array([[1, 0], [1, 1], [0, 1]], dtype=float), classes.encode("abb"), ["x", "y", "z"])
        >>> index.nearest(np.array([[1.0, 0.1], [0.0, 1.0]]), ["q", "z"], n=2)
        [[('x', 'a', 0.995), ('y', 'b', 0.774)], [('y', 'b', 0.707), ('x', 'a', 0.0)]]
        """
        ids = list(ids)
        if len(self) < 2 or len(ids) == 0 or n < 1:
            return [[] for _ in ids]
        stacked = self._stacked()
        stored_at = None
        if arrival is not None:
            stored_at = np.fromiter((arrival.get(sample_id, -1) for sample_id in stacked.stored_ids), dtype=np.int64,
                                    count=len(stacked.stored_ids))
        return exact_search.nearest(stacked, self.reservoir.unit(vectors), ids, n, self.classes.labels, stored_at,
                                    arrived)

    def predict_proba(self, vectors: np.ndarray, ids, *, chunk: int = 512, reuse: bool = False) -> np.ndarray:
        """Similarity-weighted label votes of the ``k`` nearest stored samples, rows summing to 1.

        A row is all zeros while the index holds too few samples to vote. Rows are searched in
        chunks of at most ``chunk``, spread over the cores. With ``reuse`` (re-scoring samples
        searched before), a query with cached candidates searches only what changed since, with
        the same result as a full search (see the class).
        """
        n_classes = len(self.classes)
        out = np.zeros((len(vectors), n_classes))
        if len(self) < 2 or len(vectors) == 0:
            return out
        stacked = self._stacked()
        queries = self.reservoir.unit(vectors)
        ids = list(ids)
        k = min(self.k, len(stacked.owner) - 1)
        if self.search == "hnsw" and self._large(stacked):
            self.search_counts["graph"] += len(ids)
            return exact_search.search_graph(self._graph, stacked, queries, ids, k, n_classes, self.incremental.width)
        caching = self._caching(stacked)
        prints = fingerprints(vectors) if caching else None
        todo = np.arange(len(ids))
        if reuse and caching and len(self.incremental):
            found = self.incremental.search(self.reservoir, stacked, vectors, queries, ids, prints, k, n_classes)
            self.incremental.remember(found.entries)
            out[found.settled] = found.votes[found.settled]
            todo = np.flatnonzero(~found.settled)
        if len(todo):
            rows = todo.tolist()
            searched = exact_search.search_full(stacked, queries[todo], [ids[i] for i in rows], k, n_classes,
                                                width=self.incremental.width if caching else 0, chunk=chunk)
            out[todo] = searched.votes
            if caching:
                self.incremental.remember([self.incremental.entries(
                    [ids[i] for i in rows], [prints[i] for i in rows], searched.stamps, searched.bound,
                    self.reservoir, stacked)])
        self.search_counts["full"] += len(todo)
        self.search_counts["incremental"] += len(ids) - len(todo)
        return out

    def _large(self, stacked: Stacked) -> bool:
        """Whether ``stacked`` holds enough rows for the graph, or the candidate cache, to pay."""
        return len(stacked.owner) > 4 * self.incremental.width

    def _caching(self, stacked: Stacked) -> bool:
        """Whether searches over ``stacked`` keep (and re-audits reuse) candidates."""
        return self._large(stacked) and self.incremental.cache.capacity > 0

    def vote_bounds(self, vectors: np.ndarray, ids) -> VoteBounds:
        """Per query, bounds on each label's share of the vote that ``predict_proba(reuse=True)``
        gives, from the cached candidates alone (never a full search).

        A query whose candidates prove the full search's result gets it exactly (``exact``, and
        ``low == high``; its refreshed candidates are remembered, as after any search); one whose
        candidates still show its nearest rows gets their weight as a floor and the rest of the
        vote as slack; one without a cache entry gets ``[0, 1]``. A ``low`` row summing to 0 also
        allows no vote at all. A re-audit's proof that it cannot flag a sample starts from this
        (:meth:`~detectors.ConfidentLearning.reaudit`).
        """
        n_classes = len(self.classes)
        low, high = np.zeros((len(vectors), n_classes)), np.ones((len(vectors), n_classes))
        exact = np.zeros(len(vectors), dtype=bool)
        if len(self) < 2 or len(vectors) == 0:
            return VoteBounds(low, high, exact)
        stacked = self._stacked()
        if not (self._caching(stacked) and len(self.incremental)) or self.search == "hnsw":
            return VoteBounds(low, high, exact)
        ids = list(ids)
        k = min(self.k, len(stacked.owner) - 1)
        found = self.incremental.search(self.reservoir, stacked, vectors, self.reservoir.unit(vectors), ids,
                                        fingerprints(vectors), k, n_classes, bounds=True)
        self.incremental.remember(found.entries)
        exact = found.settled
        low, high = np.where(exact[:, None], found.votes, found.low), np.where(exact[:, None], found.votes, found.high)
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
