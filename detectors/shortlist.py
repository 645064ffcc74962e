"""The exact end of a neighbour search: shortlisted pairs re-ranked in float64 and voted on.

A neighbour search shortlists stored rows by a float32 product (fast, but its last bits depend on
the BLAS kernel and the batch shape), then decides on exact similarities of the shortlisted pairs:
each one the float64 dot product of two float32 unit rows, computed pair by pair
(:func:`exact_similarities`). The vote (:func:`vote_with_ties`) only ever sees those. So whichever
way a shortlist was found, a full scan, the candidates cached from an earlier search or an
approximate index, the same shortlisted rows give the same vote, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PAIRS_PER_BLOCK = 2048
"""Pairs multiplied at once by :func:`exact_similarities` (bounds its scratch memory to about 6 MiB at 384-d)."""


def float32_error(dim: int) -> float:
    """A bound on how far a float32 dot product of two unit rows of width ``dim`` is from the exact one.

    The classic bound is ``dim`` units in the last place of float32 (``dim * 2**-24``); this is four
    times that, whatever the kernel's summation order.

    >>> round(float32_error(384), 6)
    9.2e-05
    """
    return 2.0 * dim * float(np.finfo(np.float32).eps)


def shortlist_margin(dim: int) -> float:
    """How far below the float32 ``k``-th similarity a row stays on the shortlist: far more than two
    float32 errors, so the exact top ``k`` is always inside it.

    >>> shortlist_margin(384)
    0.001
    """
    return max(1e-3, 4 * float32_error(dim))


def exact_similarities(matrix: np.ndarray, queries: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """The float64 dot product of ``queries[rows[i]]`` and ``matrix[columns[i]]`` for every pair ``i``.

    Each pair is computed alone (an elementwise product, then numpy's pairwise sum along the row), so
    its value depends only on the two rows: not on the BLAS kernel, nor on the other pairs.

    >>> m = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    >>> exact_similarities(m, np.array([[0.6, 0.8]], dtype=np.float32), np.array([0, 0]), np.array([0, 1])).round(6).tolist()
    [0.6, 1.0]
    """
    out = np.empty(len(rows))
    for start in range(0, len(rows), PAIRS_PER_BLOCK):
        stop = start + PAIRS_PER_BLOCK
        block = matrix[columns[start:stop]].astype(np.float64)
        block *= queries[rows[start:stop]]
        out[start:stop] = block.sum(axis=1)
    return out


def vote_with_ties(rows: np.ndarray, columns: np.ndarray, values: np.ndarray, k: int,
                   n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest shortlisted columns of each query row, as ``(rows, columns, weights, kth)``, ties shared.

    ``(rows[i], columns[i])`` are the shortlisted pairs and ``values[i]`` their exact similarities; a
    row with fewer than ``k`` pairs votes with all of them. A column more similar than the row's
    ``k``-th (``kth``, one per row, ``-inf`` for a row without pairs) votes with its similarity (at
    least 1e-6). Columns exactly as similar as the ``k``-th share the places left among them, so
    which of two duplicates of different labels fills the last place depends on neither the column
    order nor how the shortlist was found. The result is sorted by row, then column: summed in that
    order, the same pairs give the same vote to the last bit.

    >>> rows, columns = np.zeros(4, dtype=int), np.array([3, 0, 1, 2])
    >>> r, c, w, kth = vote_with_ties(rows, columns, np.array([0.1, 0.9, 0.5, 0.5]), 2, 1)
    >>> c.tolist(), w.round(3).tolist(), kth.tolist()
    ([0, 1, 2], [0.9, 0.25, 0.25], [0.5])
    """
    kth = np.full(n_rows, -np.inf)
    if len(rows) == 0:
        return rows, columns, np.zeros(0), kth
    order = np.lexsort((columns, -values, rows))
    rows, columns, values = rows[order], columns[order], values[order]
    counts = np.bincount(rows, minlength=n_rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    present = counts > 0
    kth[present] = values[starts[present] + np.minimum(k, counts[present]) - 1]
    chosen = values >= kth[rows]
    rows, columns, values = rows[chosen], columns[chosen], values[chosen]
    tied = values == kth[rows]
    n_tied = np.bincount(rows[tied], minlength=n_rows)
    places = np.minimum(k, counts) - np.bincount(rows[~tied], minlength=n_rows)
    share = places / np.maximum(n_tied, 1)
    weights = (np.maximum(values, 0.0) + 1e-6) * np.where(tied, share[rows], 1.0)
    order = np.lexsort((columns, rows))
    return rows[order], columns[order], weights[order], kth


@dataclass(frozen=True)
class Shortlist:
    """What :func:`shortlist` found: the pairs ``(rows, columns)`` to re-rank exactly, and, when asked
    for ``width`` candidates, each row's ``best`` columns (nearest first, ``-1`` pads) and the float32
    similarity ``beyond`` them (no other column was more similar)."""

    rows: np.ndarray
    columns: np.ndarray
    best: np.ndarray | None = None
    beyond: np.ndarray | None = None


def shortlist(sims: np.ndarray, columns: Callable[[np.ndarray, np.ndarray], np.ndarray] | None, k: int,
              width: int = 0, *, margin: float = 1e-3) -> Shortlist:
    """The columns of each row of float32 similarities ``sims`` (``-inf``: left out) within ``margin``
    (:func:`shortlist_margin`) of its ``k``-th, which hold its exact ``k`` nearest, as pairs. ``columns``
    names the stored row of cells ``(rows, places)`` (``None``: column ``j`` is row ``j``). With ``width`` (at least
    ``k``, below the number of columns), also each row's best columns, those above its ``width + 1``-th
    similarity (at most ``width``, in column order, ``-1`` pads), and that similarity, ``beyond``.

    One partition of each row's values finds both, and the pairs come from the best columns alone
    wherever they reach below the margin (nearly always): a value partition and a comparison cost a
    third of an index partition and a sort.

    >>> found = shortlist(np.array([[0.9, 0.2, 0.5, 0.1]], dtype=np.float32), None, 1, width=2)
    >>> found.columns.tolist(), found.best.tolist(), found.beyond.astype(float).round(3).tolist()
    ([0], [[0, 2]], [0.2])
    """
    n_rows, n_columns = sims.shape
    if not width:
        kth = np.partition(sims, n_columns - k, axis=1)[:, n_columns - k]
        rows, places = _at_least(sims, kth - margin)
        return Shortlist(rows, places if columns is None else columns(rows, places))
    cut = n_columns - width - 1
    part = np.partition(sims, cut, axis=1)
    beyond = part[:, cut]
    kth = np.partition(part[:, cut + 1:], width - k, axis=1)[:, width - k]
    rows, places = np.nonzero(sims > beyond[:, None])  # at most width per row: the best
    counts = np.bincount(rows, minlength=n_rows)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    best = np.full((n_rows, width), -1, dtype=np.int64)
    best[rows, slot] = places if columns is None else columns(rows, places)
    floor = kth - margin
    near = sims[rows, places] >= floor[rows]
    wide = np.flatnonzero(~(floor > beyond))  # rows whose margin reaches past the best: searched in full
    if len(wide):
        keep = ~np.isin(rows, wide)
        extra_rows, extra_places = _at_least(sims[wide], floor[wide])
        rows = np.concatenate([rows[near & keep], wide[extra_rows]])
        places = np.concatenate([places[near & keep], extra_places])
        order = np.lexsort((places, rows))
        rows, places = rows[order], places[order]
    else:
        rows, places = rows[near], places[near]
    return Shortlist(rows, places if columns is None else columns(rows, places), best, beyond)


def _at_least(sims: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The finite cells of each row at least its ``floor``, as ``(rows, places)`` in row-major order."""
    rows, places = np.nonzero(sims >= floor[:, None])
    finite = np.isfinite(sims[rows, places])
    return rows[finite], places[finite]
