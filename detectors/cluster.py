"""Cluster disagreement: a label that differs from its cluster's majority is suspect."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field
from sklearn.cluster import MiniBatchKMeans

from detectors.base import NEUTRAL, Batch, Detector, LabelIndex, Signal
from detectors.registry import Params, register


@register
class ClusterDisagreement(Detector):
    """Flags samples whose label disagrees with the majority label of their K-means cluster.

    Clusters come from scikit-learn's ``MiniBatchKMeans``, updated with ``partial_fit`` on every
    micro-batch. Label counts are kept over a bounded window of the most recent ``window``
    samples, and **recomputed against the current centroids after every update**. A refit moves
    centroids and so changes earlier assignments; recounting the window means a count never
    refers to a cluster its sample no longer belongs to, and memory stays bounded. Lifetime
    per-cluster totals are kept separately in :attr:`cluster_totals`.

    A sample is flagged when its cluster holds at least ``min_cluster_size`` window members, the
    majority label holds at least ``min_majority`` of them, and the sample's label is not it. The
    score is the share of the cluster that does *not* carry the sample's label.

    Parameters
    ----------
    n_clusters
        K, the number of clusters.
    window
        How many recent samples the label counts cover.
    min_cluster_size
        Fewer members than this and the cluster has no opinion.
    min_majority
        The majority label's share needed before disagreeing with it is suspect.
    seed
        Seeds K-means.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> centers = np.array([[0.0, 0.0], [10.0, 10.0]])
    >>> detector = ClusterDisagreement(n_clusters=2, min_cluster_size=5, seed=0)
    >>> for _ in range(5):
    ...     which = rng.integers(0, 2, 40)
    ...     vectors = centers[which] + rng.normal(size=(40, 2))
    ...     _ = detector.process_many(Batch.of(vectors, ["ab"[w] for w in which]))
    >>> signal, = detector.score_many(Batch.of([[10.0, 10.0]], ["a"]))
    >>> (signal.flagged, signal.suggested_label, round(signal.score, 2))
    (True, 'b', 1.0)
    """

    name = "cluster"

    class Params(Params):
        n_clusters: int = Field(32, ge=1, description="K of the mini-batch K-means clusters.")
        cluster_window: int = Field(4096, ge=1, description="Recent samples the cluster label counts cover.")
        min_cluster_size: int = Field(10, ge=1, description="Smaller clusters do not judge.")
        min_majority: float = Field(0.8, gt=0, le=1, description="Majority share a cluster needs to judge.")

    @classmethod
    def from_params(cls, p: Params, seed: int) -> ClusterDisagreement:
        return cls(p.n_clusters, window=max(p.cluster_window, p.n_clusters), min_cluster_size=p.min_cluster_size,
                   min_majority=p.min_majority, seed=seed)

    def __init__(
        self,
        n_clusters: int = 32,
        *,
        window: int = 4096,
        min_cluster_size: int = 10,
        min_majority: float = 0.8,
        seed: int = 0,
    ):
        if n_clusters < 1:
            raise ValueError("n_clusters must be at least 1")
        if window < n_clusters:
            raise ValueError("window must hold at least n_clusters samples")
        self.n_clusters = n_clusters
        self.window = window
        self.min_cluster_size = min_cluster_size
        self.min_majority = min_majority
        self.seed = seed
        self._kmeans = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=1, compute_labels=False)
        self._fitted = False
        self._labels = LabelIndex()
        self._vectors: np.ndarray | None = None  # ring buffer of recent vectors
        self._label_ids = np.zeros(window, dtype=np.int64)
        self._ids: list[str | None] = [None] * window  # the sample id in each slot, for leave-one-out re-scores
        self._assigned = np.zeros(window, dtype=np.int64)
        self._filled = 0
        self._next = 0
        self._counts = np.zeros((n_clusters, 0), dtype=np.int64)
        self.cluster_totals = np.zeros(n_clusters, dtype=np.int64)
        self._prefit: list[np.ndarray] = []

    def __setstate__(self, state: dict) -> None:
        # (older checkpoints kept no sample ids: their window's slots have none, and re-score in sample)
        self.__dict__.update({"_ids": [None] * state["window"], **state})

    def __repr__(self) -> str:
        return f"ClusterDisagreement(n_clusters={self.n_clusters}, window={self.window})"

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """The current cluster of each vector (``-1`` before K-means has enough data)."""
        if not self._fitted or len(vectors) == 0:
            return np.full(len(vectors), -1, dtype=np.int64)
        return self._kmeans.predict(np.asarray(vectors, dtype=np.float32)).astype(np.int64)

    def score_many(self, batch: Batch) -> list[Signal]:
        if not self._fitted:
            return [NEUTRAL] * len(batch)
        return [self._judge(cluster, self._counts[cluster], label)
                for cluster, label in zip(self.assign(batch.vectors).tolist(), batch.labels)]

    def reaudit(self, batch: Batch, *, final: bool = False, prove: bool = True) -> list[Signal]:
        """Re-judge learned samples against their cluster now, each left out of its cluster's counts
        (as cheap as judging: nothing to prove).

        >>> detector = ClusterDisagreement(n_clusters=1, min_cluster_size=2, window=8)
        >>> detector.learn_many(Batch.of([[0.0], [0.1], [0.2]], ["a", "a", "b"], ids=["1", "2", "3"]))
        >>> [s.flagged for s in detector.reaudit(Batch.of([[0.0], [0.2]], ["a", "b"], ids=["1", "3"]))]
        [False, True]
        """
        if not self._fitted:
            return [NEUTRAL] * len(batch)
        slots = {key: slot for slot, key in enumerate(self._ids[: self._filled]) if key is not None}
        signals = []
        for cluster, label, key in zip(self.assign(batch.vectors).tolist(), batch.labels, batch.ids):
            counts, slot = self._counts[cluster], slots.get(key)
            if slot is not None and self._assigned[slot] == cluster:
                counts = counts.copy()
                counts[self._label_ids[slot]] -= 1
            signals.append(self._judge(cluster, counts, label))
        return signals

    def _judge(self, cluster: int, counts: np.ndarray, label: str) -> Signal:
        """The signal for ``label`` in ``cluster``, whose window holds ``counts`` of each label."""
        size = int(counts.sum())
        if size < self.min_cluster_size:
            return Signal(0.0, False, details={"cluster_id": cluster, "cluster_size": size})
        majority = int(counts.argmax())
        majority_share = counts[majority] / size
        own = counts[self._labels._ids[label]] if label in self._labels._ids else 0
        majority_label = self._labels.labels[majority]
        flagged = bool(majority_label != label and majority_share >= self.min_majority)
        return Signal(float(1.0 - own / size), flagged, majority_label if majority_label != label else None,
                      {"cluster_id": cluster, "cluster_size": size, "majority_label": majority_label,
                       "majority_share": round(float(majority_share), 4)})

    def learn_many(self, batch: Batch) -> None:
        if len(batch) == 0:
            return
        label_ids = self._labels.encode(batch.labels)
        self._remember(batch.vectors, label_ids, batch.ids)
        if not self._fitted:
            self._prefit.append(batch.vectors)  # fewer than n_clusters samples until the first fit
            if self._filled < self.n_clusters:
                return
            self._partial_fit(self._window_vectors())
            self._fitted = True
            newly_counted, self._prefit = np.vstack(self._prefit), []  # everything learned so far, once
        else:
            self._partial_fit(batch.vectors)
            newly_counted = batch.vectors
        self.cluster_totals += np.bincount(self.assign(newly_counted), minlength=self.n_clusters)
        self._recount()

    def _partial_fit(self, vectors: np.ndarray) -> None:
        self._kmeans.partial_fit(vectors)
        # sklearn runs K-means on `_n_threads` OpenMP threads, fixed at its first fit. Its loops split
        # samples and centres between threads, so one gives the same clusters, without threads that
        # spin beside the rest of the work (detectors/threads.py)
        self._kmeans._n_threads = 1

    @property
    def n_active_clusters(self) -> int:
        """Clusters that hold at least one sample of the window."""
        return int((self._counts.sum(axis=1) > 0).sum())

    @property
    def purity(self) -> float | None:
        """Share of the window's samples whose label is their cluster's majority label (1.0 = unmixed).

        ``None`` before the first fit.
        """
        total = int(self._counts.sum()) if self._fitted else 0
        return float(self._counts.max(axis=1).sum() / total) if total else None

    def label_counts(self) -> dict[int, dict[str, int]]:
        """Label counts of each cluster over the window, under the current centroids.

        A cluster with several labels of real weight is a cluster worth reviewing.
        """
        return {
            cluster: {self._labels.labels[j]: int(n) for j, n in enumerate(row) if n}
            for cluster, row in enumerate(self._counts)
        }

    def label_mix_of(self, vectors: np.ndarray, signals) -> list[dict[str, int]]:
        """The label mix of each sample's cluster: the one its signal names, or for a signal that names
        none (judged before the first fit, or none at all) the cluster it falls in now."""
        clusters = [s.details.get("cluster_id") if s is not None else None for s in signals]
        unassigned = [i for i, c in enumerate(clusters) if c is None]
        if unassigned and self._fitted:
            for i, c in zip(unassigned, self.assign(vectors[unassigned]).tolist()):
                clusters[i] = c
        return [self.label_mix(c) for c in clusters]

    def label_mix(self, cluster_id: int | None) -> dict[str, int]:
        """Label counts of one cluster over the window, largest first (ties by label); ``{}`` before
        the first fit and for no cluster (``None`` or ``-1``).

        >>> detector = ClusterDisagreement(n_clusters=1, window=4)
        >>> detector.label_mix(0)
        {}
        >>> detector.learn_many(Batch.of([[0.0], [1.0], [2.0], [3.0]], ["b", "a", "b", "c"]))
        >>> detector.label_mix(0), detector.label_mix(-1)
        ({'b': 2, 'a': 1, 'c': 1}, {})
        """
        if not self._fitted or cluster_id is None or not 0 <= cluster_id < len(self._counts):
            return {}
        row = self._counts[cluster_id].tolist()
        mix = [(self._labels.labels[j], n) for j, n in enumerate(row) if n > 0]
        return dict(sorted(mix, key=lambda item: (-item[1], item[0])))

    def _window_vectors(self) -> np.ndarray:
        return self._vectors[: self._filled]

    def _remember(self, vectors: np.ndarray, label_ids: np.ndarray, ids: Sequence[str]) -> None:
        if self._vectors is None:
            self._vectors = np.zeros((self.window, vectors.shape[1]), dtype=np.float32)
        n = len(vectors)
        ids = list(ids)
        if n >= self.window:
            vectors, label_ids, ids, n = vectors[-self.window :], label_ids[-self.window :], ids[-self.window :], self.window
        slots = (self._next + np.arange(n)) % self.window
        self._vectors[slots] = vectors
        self._label_ids[slots] = label_ids
        for slot, key in zip(slots.tolist(), ids):
            self._ids[slot] = key
        self._next = int((self._next + n) % self.window)
        self._filled = min(self.window, self._filled + n)

    def _recount(self) -> None:
        n_labels = len(self._labels)
        assigned = self.assign(self._window_vectors())
        self._assigned[: self._filled] = assigned
        flat = assigned * n_labels + self._label_ids[: self._filled]
        self._counts = np.bincount(flat, minlength=self.n_clusters * n_labels).reshape(self.n_clusters, n_labels)
