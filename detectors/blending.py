"""How confident learning averages its sources' probabilities, exactly or over an interval of votes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.noise import confident_disagreement, label_margin


@dataclass(frozen=True)
class Blend:
    """The weighted average of the sources with evidence (``neighbors``, ``model``, ``user``), row by
    row. Neighbours and model share ``neighbor_weight + model_weight`` in the proportion the data
    chose (``model_share``, :class:`~detectors.noise.SourceMix`); a source without evidence for a row
    (all zeros) is left out of it.

    >>> blend = Blend(neighbor_weight=1.0, model_weight=1.0, user_weight=0.5, model_share=0.5)
    >>> blend({"neighbors": np.array([[1.0, 0.0]]), "model": np.array([[0.0, 1.0]])}, (1, 2)).tolist()
    [[0.5, 0.5]]
    """

    neighbor_weight: float
    model_weight: float
    user_weight: float
    model_share: float = 0.5

    def weights(self, names) -> dict[str, float]:
        """The weight of each source, given which ``names`` are among the sources."""
        pair = self.neighbor_weight + self.model_weight
        if "neighbors" in names and "model" in names:
            weights = {"neighbors": pair * (1 - self.model_share), "model": pair * self.model_share}
        else:
            weights = {"neighbors": self.neighbor_weight, "model": self.model_weight}
        weights["user"] = self.user_weight
        return weights

    def sums(self, sources: dict[str, np.ndarray], names, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Row by row, the sum of weight × probability and the sum of weights over the ``sources`` (each
        of ``shape``: rows × labels) with evidence, each weighted as in a blend of ``names``."""
        weights = self.weights(names)
        total, weight = np.zeros(shape), np.zeros((shape[0], 1))
        for name, proba in sources.items():
            has = (proba.sum(axis=1, keepdims=True) > 0).astype(float)
            total += weights[name] * proba * has
            weight += weights[name] * has
        return total, weight

    def __call__(self, sources: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        total, weight = self.sums(sources, sources, shape)
        return total / np.maximum(weight, 1e-12)

    def clean_within(self, others: dict[str, np.ndarray], label_ids: np.ndarray, thresholds: np.ndarray,
                     cutoffs: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Whether each row stays unflagged by the live rule (cleanlab's rule, within its label's budget
        ``cutoffs``) for every neighbour vote between ``low`` and ``high`` (and for no vote at all, where
        ``low`` allows it): the blend of ``others`` (every source but the neighbours) and that vote, on an
        interval. Class c's blended probability lies between ``vote * low[c] + rest[c]`` and
        ``vote * high[c] + rest[c]``."""
        rows = np.arange(len(label_ids))
        known, weight = self.sums(others, {"neighbors", *others}, low.shape)
        neighbors = self.weights({"neighbors", *others})["neighbors"]
        vote, rest = neighbors / (weight + neighbors), known / (weight + neighbors)
        highest = vote * high + rest
        highest[rows, label_ids] = -np.inf
        slack = 1e-9  # far above the rounding of the blend's few sums
        no_threshold_cleared = ~(highest >= thresholds[None, :] - slack).any(axis=1)
        margin_short = highest.max(axis=1) - (vote[:, 0] * low[rows, label_ids] + rest[rows, label_ids]) < cutoffs - slack
        clean = no_threshold_cleared | margin_short
        maybe_none = low.sum(axis=1) == 0
        if maybe_none.any():  # no vote at all (nothing to vote with): what the blend gives with a vote of zeros
            alone = known / np.maximum(weight, 1e-12)
            rule, _ = confident_disagreement(alone, label_ids, thresholds)
            clean &= ~maybe_none | ~(rule & (label_margin(alone, label_ids) >= cutoffs))
        return clean
