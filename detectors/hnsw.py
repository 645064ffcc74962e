"""An approximate shortlist for large neighbour reservoirs: an HNSW graph (hnswlib), optional.

``pip install 'labelwatch[ann]'`` installs hnswlib (built from source: it needs a C++ compiler).
The graph only proposes candidates; :class:`~detectors.neighbors.NeighborIndex` still votes on their
exact similarities, so a vote differs from brute force only when the graph misses one of the ``k``
nearest among the candidates it returns.
"""

from __future__ import annotations

import importlib

import numpy as np

M = 16
"""Links per node of the graph (hnswlib's default)."""

EF_CONSTRUCTION = 100
"""Candidates considered while linking a new node."""


def _hnswlib():
    try:
        return importlib.import_module("hnswlib")  # optional: only the `ann` extra installs it
    except ImportError:
        raise ImportError("neighbor_search='hnsw' needs hnswlib: pip install 'labelwatch[ann]' "
                          "(it compiles, so it needs a C++ compiler), or use neighbor_search='brute'") from None


class HnswGraph:
    """An HNSW graph over a :class:`~detectors.neighbors.NeighborIndex`'s stored rows, labelled by their
    insertion stamps, kept in step with the reservoir by :meth:`sync`.

    A row evicted from the reservoir is marked deleted in the graph (search skips it); once as many
    rows are deleted as live, the graph is rebuilt from the rows stored then. Nodes are added one
    thread at a time and the graph is pickled with the index, so a given sample sequence builds the
    same graph in every process: a restored checkpoint searches the graph the first run had.
    (Its example is a test, tests/test_neighbor_search.py, skipped where hnswlib is not installed.)
    """

    def __init__(self, dim: int, *, seed: int = 0):
        self.dim = dim
        self.seed = seed
        self._graph = None
        self._stamps = np.zeros(0, dtype=np.int64)  # live nodes, sorted
        self._deleted = 0

    def __len__(self) -> int:
        return len(self._stamps)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_graph"] = None if self._graph is None else self._graph.__getstate__()  # numpy arrays and builtins
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if state["_graph"] is not None:
            hnswlib = _hnswlib()
            graph = hnswlib.Index.__new__(hnswlib.Index)
            graph.__setstate__(state["_graph"])
            self._graph = graph

    def sync(self, rows: np.ndarray, stamps: np.ndarray) -> None:
        """Make the graph hold exactly the stored ``rows`` (unit float32), known by ``stamps``: add the
        new ones, mark the evicted ones deleted, rebuild when half the nodes are deleted."""
        gone = np.setdiff1d(self._stamps, stamps, assume_unique=True)
        if self._graph is None or self._deleted + len(gone) > len(stamps):
            hnswlib = _hnswlib()
            self._graph = hnswlib.Index(space="ip", dim=self.dim)
            self._graph.init_index(max_elements=max(2 * len(stamps), 64), ef_construction=EF_CONSTRUCTION, M=M,
                                   random_seed=self.seed)
            self._stamps, self._deleted, new = np.zeros(0, dtype=np.int64), 0, np.arange(len(stamps))
        else:
            for stamp in gone.tolist():
                self._graph.mark_deleted(stamp)
            self._deleted += len(gone)
            new = np.flatnonzero(~np.isin(stamps, self._stamps, assume_unique=True))
        if len(new):
            needed = self._graph.get_current_count() + len(new)
            if needed > self._graph.get_max_elements():
                self._graph.resize_index(max(needed, 2 * self._graph.get_max_elements()))
            self._graph.add_items(rows[new], stamps[new], num_threads=1)  # one thread: the same graph every run
        self._stamps = np.sort(stamps)

    def candidates(self, queries: np.ndarray, n: int, *, threads: int = 1) -> np.ndarray:
        """The stamps of about the ``n`` rows nearest each query by inner product, nearest first (``-1`` pads)."""
        n_live = min(n, len(self._stamps))
        out = np.full((len(queries), n), -1, dtype=np.int64)
        if n_live == 0 or len(queries) == 0:
            return out
        self._graph.set_ef(max(2 * n_live, 64))
        labels, _ = self._graph.knn_query(queries, k=n_live, num_threads=threads)
        out[:, :n_live] = labels.astype(np.int64)
        return out
