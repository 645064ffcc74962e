"""What a neighbour index stores: a bounded, uniform sample of each label's past (:class:`Reservoir`),
standardised with running statistics of everything learned, and stacked for searching (:class:`Stacked`)."""

from __future__ import annotations

import numpy as np


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
        """``(mean, std)`` as :meth:`transform` applies them now, in float32 (``None`` before any update)."""
        if self.mean is None:
            return None
        std = np.sqrt(self._m2 / max(self.n, 1))
        return self.mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return standardized(x, self.parameters())


def standardized(x: np.ndarray, parameters: tuple[np.ndarray, np.ndarray] | None,
                 out: np.ndarray | None = None) -> np.ndarray:
    """``x`` standardised with float32 ``(mean, std)`` (:meth:`RunningStandardizer.parameters`), as float32
    (into ``out`` when given). Elementwise float32 arithmetic: the same bits on every CPU."""
    x = np.asarray(x, dtype=np.float32)
    if parameters is None:
        return x if out is None else np.copyto(out, x) or out
    mean, std = parameters
    out = np.subtract(x, mean, out=out)
    return np.divide(out, std, out=out)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` (float32) with every row scaled to length 1, in place."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms += 1e-9
    return np.divide(x, norms, out=x)


class Stacked:
    """Every stored sample as one matrix (standardised unit rows, labels in sorted order), with each
    row's label id (``owner``), insertion ``stamps``, sample id (``stored_ids``), the rows of each
    sample id (``positions``) and the standardisation ``version`` it was made with."""

    def __init__(self, matrix: np.ndarray, owner: np.ndarray, stamps: np.ndarray, stored_ids: list[str],
                 version: int):
        self.matrix, self.owner, self.stamps, self.stored_ids, self.version = matrix, owner, stamps, stored_ids, version
        self.positions: dict[str, list[int]] = {}
        for position, sample_id in enumerate(stored_ids):
            self.positions.setdefault(sample_id, []).append(position)
        self._order = np.argsort(stamps)

    def position_of(self, stamps: np.ndarray) -> np.ndarray:
        """The row of each stamp; ``-1`` for one no longer stored (evicted), and for ``-1`` pads."""
        ordered = self.stamps[self._order]
        at = np.minimum(np.searchsorted(ordered, stamps), len(ordered) - 1)
        return np.where((ordered[at] == stamps) & (stamps >= 0), self._order[at], -1)

    def stamps_of(self, rows: np.ndarray) -> np.ndarray:
        """The stamp of each row; ``-1`` for ``-1``."""
        return np.where(rows >= 0, self.stamps[np.maximum(rows, 0)], -1)


class Reservoir:
    """At most ``per_class`` samples of each label (Algorithm R, seeded), so memory is bounded however
    long the stream runs while each label's store stays a uniform sample of its history. Every
    stored sample has a stamp, unique and increasing in the order samples were stored.

    Vectors are standardised with the running statistics of every sample learned (stored or not);
    :meth:`stacked` gives the stored rows standardised and scaled to unit length, made once per
    learning step (its ``version``).

    >>> reservoir = Reservoir(per_class=2, standardize=False)
    >>> reservoir.learn(np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]), np.array([0, 1, 0]), ["a", "b", "c"])
    >>> stacked = reservoir.stacked()
    >>> stacked.stored_ids, stacked.owner.tolist(), stacked.matrix[1].tolist()
    (['a', 'c', 'b'], [0, 0, 1], [1.0, 0.0])
    """

    def __init__(self, per_class: int = 1000, *, standardize: bool = True, seed: int = 0):
        self.per_class = per_class
        self.standardize = standardize
        self.seed = seed
        self.version = 0  # learning steps: each changes the standardisation
        self.n_stamped = 0
        self._rng = np.random.default_rng(seed)
        self._scaler = RunningStandardizer()
        self._vectors: dict[int, np.ndarray] = {}
        self._ids: dict[int, list[str]] = {}
        self._stamps: dict[int, np.ndarray] = {}  # per label and slot: when the sample there was stored
        self._seen: dict[int, int] = {}
        self._stacked: Stacked | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_stacked": None}  # rebuilt on use

    @classmethod
    def restored(cls, state: dict) -> Reservoir:
        """The reservoir of an older release's ``NeighborIndex`` state (which held these fields itself)."""
        reservoir = cls.__new__(cls)
        reservoir.__dict__.update(per_class=state["per_class"], standardize=state["standardize"],
                                  seed=state.get("seed", 0), version=state.get("_version", 0),
                                  n_stamped=state.get("_n_stamped", 0), _rng=state["_rng"],
                                  _scaler=state["_scaler"], _vectors=state["_vectors"], _ids=state["_ids"],
                                  _stamps=state.get("_stamps", {}), _seen=state["_seen"], _stacked=None)
        if "_stamps" not in state:  # older still: stamped in stacking order
            for label in sorted(reservoir._ids):
                stamps = reservoir._stamps[label] = np.full(reservoir.per_class, -1, dtype=np.int64)
                n = len(reservoir._ids[label])
                stamps[:n] = np.arange(reservoir.n_stamped, reservoir.n_stamped + n)
                reservoir.n_stamped += n
        return reservoir

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._ids.values())

    def learn(self, vectors: np.ndarray, label_ids: np.ndarray, ids) -> None:
        if self.standardize:
            self._scaler.update(vectors)
        for vector, label, sample_id in zip(vectors, label_ids.tolist(), ids):
            seen = self._seen.get(label, 0)
            slot = seen if seen < self.per_class else int(self._rng.integers(0, seen + 1))
            if slot < self.per_class:
                store = self._vectors.get(label)
                if store is None:
                    store = self._vectors[label] = np.zeros((self.per_class, len(vector)), dtype=np.float32)
                    self._ids[label] = []
                    self._stamps[label] = np.full(self.per_class, -1, dtype=np.int64)
                store[slot] = vector
                if slot == len(self._ids[label]):
                    self._ids[label].append(sample_id)
                else:
                    self._ids[label][slot] = sample_id
                self._stamps[label][slot] = self.n_stamped
                self.n_stamped += 1
            self._seen[label] = seen + 1
        self._stacked = None
        self.version += 1

    def peek(self) -> Stacked | None:
        """The stacked rows if they are made already (what a search last saw), else ``None``."""
        return self._stacked

    def parameters(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The standardisation in force (``None``: none, vectors are only scaled to unit length)."""
        return self._scaler.parameters() if self.standardize else None

    def unit(self, vectors: np.ndarray, parameters=False) -> np.ndarray:
        """``vectors`` standardised (with ``parameters``, by default the current ones) as unit float32 rows."""
        out = np.array(vectors, dtype=np.float32)
        return unit_rows(standardized(out, self.parameters() if parameters is False else parameters, out=out))

    def stacked(self) -> Stacked:
        """Every stored row, standardised and of unit length, in sorted label order (made once per version)."""
        if self._stacked is None:
            labels = sorted(self._ids)
            sizes = [len(self._ids[c]) for c in labels]
            matrix = np.empty((sum(sizes), self._vectors[labels[0]].shape[1]), dtype=np.float32)
            np.concatenate([self._vectors[c][:n] for c, n in zip(labels, sizes)], out=matrix)
            unit_rows(standardized(matrix, self.parameters(), out=matrix))
            owner = np.repeat(np.array(labels, dtype=np.int64), sizes)
            stamps = np.concatenate([self._stamps[c][:n] for c, n in zip(labels, sizes)])
            self._stacked = Stacked(matrix, owner, stamps, [i for c in labels for i in self._ids[c]], self.version)
        return self._stacked
