"""The exact neighbour search over a :class:`~detectors.reservoir.Stacked` matrix: every stored row
shortlisted by a float32 product, the vote taken on exact similarities (:mod:`detectors.shortlist`).

Every function returns values and keeps no state, so a search over the same rows gives the same
result whichever batch, thread or caller asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detectors.reservoir import Stacked
from detectors.shortlist import exact_similarities, float32_error, shortlist, shortlist_margin, vote_with_ties
from detectors.threads import SEARCH_THREADS, search_in_parallel


def vote(stacked: Stacked, queries: np.ndarray, rows: np.ndarray, columns: np.ndarray, k: int, n_classes: int,
         exact: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(votes, kth)``: each query's label shares among its ``k`` nearest shortlisted stored rows (the
    pairs ``(rows, columns)``), on their ``exact`` similarities (computed here unless given), rows
    summing to 1 (0 without pairs); and each query's ``k``-th similarity."""
    if exact is None:
        exact = exact_similarities(stacked.matrix, queries, rows, columns)
    rows, columns, weights, kth = vote_with_ties(rows, columns, exact, k, len(queries))
    cells = rows * n_classes + stacked.owner[columns]
    block = np.bincount(cells, weights=weights, minlength=len(queries) * n_classes).reshape(-1, n_classes)
    return block / np.maximum(block.sum(axis=1, keepdims=True), 1e-12), kth


@dataclass(frozen=True)
class Searched:
    """What :func:`search_full` found: the ``votes``, and when asked for candidates, each query's
    ``width`` nearest rows by ``stamps`` (``-1`` pads) and a ``bound`` no other stored row exceeds."""

    votes: np.ndarray
    stamps: np.ndarray | None = None
    bound: np.ndarray | None = None


def search_full(stacked: Stacked, queries: np.ndarray, ids: Sequence[str], k: int, n_classes: int, *,
                width: int = 0, chunk: int = 512) -> Searched:
    """Every query against every stored row, each left out of its own vote; chunks of ``chunk`` rows
    spread over the cores (:func:`~detectors.threads.search_in_parallel`). With ``width``, also the
    candidates a later search of the same query may start from."""
    matrix, positions = stacked.matrix, stacked.positions
    error = float32_error(matrix.shape[1])
    votes = np.zeros((len(queries), n_classes))
    kept: dict[int, tuple] = {}

    def search(start: int, stop: int) -> None:
        sims = queries[start:stop] @ matrix.T  # float32: only to shortlist
        own = [(row, column) for row, sample_id in enumerate(ids[start:stop]) for column in positions.get(sample_id, ())]
        if own:  # leave each sample itself out of its vote
            sims[tuple(np.array(own).T)] = -np.inf
        found = shortlist(sims, None, k, width, margin=shortlist_margin(matrix.shape[1]))
        votes[start:stop] = vote(stacked, queries[start:stop], found.rows, found.columns, k, n_classes)[0]
        if width:
            kept[start] = (stacked.stamps_of(found.best), found.beyond.astype(np.float64) + error)

    search_in_parallel(search, len(queries), chunk)
    if not width:
        return Searched(votes)
    order = sorted(kept)  # in query order, whatever order the threads finished in
    return Searched(votes, np.concatenate([kept[s][0] for s in order]), np.concatenate([kept[s][1] for s in order]))


def search_graph(graph, stacked: Stacked, queries: np.ndarray, ids: Sequence[str], k: int, n_classes: int,
                 width: int) -> np.ndarray:
    """The votes among the ``width`` candidates an HNSW ``graph`` proposes, on their exact similarities."""
    at = stacked.position_of(graph.candidates(queries, width, threads=SEARCH_THREADS))
    rows, places = np.nonzero(at >= 0)
    columns = at[rows, places]
    n_stored = len(stacked.owner)
    own = [row * n_stored + p for row, sample_id in enumerate(ids) for p in stacked.positions.get(sample_id, ())]
    if own:  # leave each sample itself out of its vote
        keep = ~np.isin(rows * n_stored + columns, own)
        rows, columns = rows[keep], columns[keep]
    return vote(stacked, queries, rows, columns, k, n_classes)[0]


def nearest(stacked: Stacked, queries: np.ndarray, ids: Sequence[str], n: int, labels: Sequence[str],
            stored_at: np.ndarray | None = None, arrived: Sequence[int] | None = None
            ) -> list[list[tuple[str, str, float]]]:
    """The ``n`` stored rows most similar to each query as ``(sample_id, label, similarity)``, nearest
    first, similarity rounded to 3 decimals, the query's own id left out; with ``stored_at`` (each
    stored row's stream position) and ``arrived`` (each query's), only rows that arrived before it.

    A shortlist from the float32 product is re-ranked in float64 row by row, so what a query gets
    depends neither on the other queries nor on the BLAS kernel; ties go to the earlier stored row.
    """
    matrix, stored = stacked.matrix, stacked.stored_ids
    sims = queries @ matrix.T  # float32: only to shortlist
    out = []
    for row, sample_id in enumerate(ids):
        allowed = np.ones(len(stored), dtype=bool)
        allowed[stacked.positions.get(sample_id, [])] = False
        if stored_at is not None:
            allowed &= stored_at < arrived[row]
        candidates = np.flatnonzero(allowed)
        if len(candidates) > n:  # a margin far above float32 rounding keeps every true top-n in
            short = sims[row, candidates]
            candidates = candidates[short >= np.partition(short, len(short) - n)[-n] - 1e-3]
        exact = (matrix[candidates].astype(np.float64) * queries[row].astype(np.float64)).sum(axis=1)
        best = np.lexsort((candidates, -exact))[:n]
        out.append([(stored[c], labels[stacked.owner[c]], round(float(s), 3) + 0.0)
                    for c, s in zip(candidates[best].tolist(), exact[best].tolist())])
    return out
