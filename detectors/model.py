"""Model disagreement: an online classifier, evaluated test-then-train, that doubts the label."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import Field
from river import linear_model, preprocessing

from detectors.base import NEUTRAL, Batch, Detector, Signal
from detectors.registry import Params, register


def default_classifier():
    """The default online model: standardised features into multinomial logistic regression."""
    return preprocessing.StandardScaler() | linear_model.SoftmaxRegression()


class RandomProjection:
    """A fixed, seeded Gaussian projection to ``n_components`` dimensions.

    It keeps distances roughly intact (Johnson-Lindenstrauss), and it never changes once drawn,
    so the online model downstream still sees one consistent feature space.

    >>> p = RandomProjection(8, seed=0)
    >>> p.transform(np.ones((3, 100), dtype=np.float32)).shape
    (3, 8)
    """

    def __init__(self, n_components: int, seed: int = 0):
        self.n_components = n_components
        self.seed = seed
        self._matrix: np.ndarray | None = None

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        if vectors.shape[1] <= self.n_components:
            return vectors
        if self._matrix is None or self._matrix.shape[0] != vectors.shape[1]:
            rng = np.random.default_rng(self.seed)
            self._matrix = rng.normal(size=(vectors.shape[1], self.n_components)).astype(np.float32)
            self._matrix /= np.sqrt(self.n_components)
        return vectors @ self._matrix


def blend(model: Mapping[str, float], user: Mapping[str, float] | None, user_weight: float) -> dict[str, float]:
    """Average the online model's probabilities with the user's own, where the user sent some.

    >>> blend({"a": 0.8, "b": 0.2}, {"a": 0.0, "b": 1.0}, 0.5)
    {'a': 0.4, 'b': 0.6}
    >>> blend({"a": 1.0}, None, 0.5)
    {'a': 1.0}
    """
    if not user:
        return dict(model)
    if not model:
        return dict(user)
    labels = model.keys() | user.keys()
    return {
        label: (1 - user_weight) * model.get(label, 0.0) + user_weight * user.get(label, 0.0)
        for label in sorted(labels)
    }


class UserPrediction(Params):
    """The producer's own prediction, for detectors that blend it in."""

    user_weight: float = Field(0.5, ge=0, le=1, description="Weight of the producer's own prediction.")


@register
class ModelDisagreement(Detector):
    """Flags samples that an online classifier confidently assigns to another class.

    Each micro-batch is predicted by a river classifier *before* the classifier learns it
    (test-then-train), so every prediction is out of sample: the streaming form of
    cross-validation. When a sample carries the user's own model probabilities, they are blended
    with the online model's (weight ``user_weight``) before judging.

    The score is ``1 - p(given label)``. A sample is flagged when the most probable class is not
    the given label and its probability reaches ``confidence``. Until ``warmup`` samples have
    been learned, only the user's own prediction (if any) can flag.

    Vectors wider than ``max_features`` pass through a fixed random projection first: river's
    per-sample API costs time linear in the width.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> detector = ModelDisagreement(warmup=20, confidence=0.7)
    >>> for _ in range(10):
    ...     which = rng.integers(0, 2, 30)
    ...     vectors = np.where(which[:, None] == 1, 3.0, -3.0) + rng.normal(size=(30, 4))
    ...     _ = detector.process_many(Batch.of(vectors, ["ab"[w] for w in which]))
    >>> signal, = detector.score_many(Batch.of([[3.0, 3.0, 3.0, 3.0]], ["a"]))
    >>> (signal.flagged, signal.suggested_label, signal.score > 0.9)
    (True, 'b', True)
    """

    name = "model"

    class Params(UserPrediction):
        model_confidence: float = Field(0.5, gt=0, le=1, description="Probability the online model needs to flag.")
        model_warmup: int = Field(50, ge=0, description="Samples the online model learns before judging.")
        model_max_features: int = Field(
            64, ge=1, description="Wider vectors are randomly projected to this many for the online model.")

    @classmethod
    def from_params(cls, p: Params, seed: int) -> ModelDisagreement:
        return cls(confidence=p.model_confidence, warmup=p.model_warmup, user_weight=p.user_weight,
                   max_features=p.model_max_features, seed=seed)

    def __init__(
        self,
        *,
        confidence: float = 0.5,
        warmup: int = 50,
        user_weight: float = 0.5,
        max_features: int = 64,
        seed: int = 0,
        classifier_factory=default_classifier,
    ):
        self.confidence = confidence
        self.warmup = warmup
        self.user_weight = user_weight
        self.max_features = max_features
        self.seed = seed
        self.classifier_factory = classifier_factory
        self._classifier = classifier_factory()
        self._projection = RandomProjection(max_features, seed=seed)
        self._seen_labels: set[str] = set()
        self.n_learned = 0

    def __repr__(self) -> str:
        return f"ModelDisagreement(confidence={self.confidence}, warmup={self.warmup})"

    def _features(self, vectors: np.ndarray) -> list[dict[int, float]]:
        projected = self._projection.transform(vectors)
        return [dict(enumerate(row)) for row in projected.tolist()]

    def predict_proba_many(self, batch: Batch) -> list[dict[str, float]]:
        """Out-of-sample class probabilities of the online model (empty while it knows < 2 classes)."""
        if len(self._seen_labels) < 2:
            return [{} for _ in range(len(batch))]
        return [self._normalised(self._classifier.predict_proba_one(x)) for x in self._features(batch.vectors)]

    @staticmethod
    def _normalised(proba: Mapping[str, float]) -> dict[str, float]:
        total = sum(proba.values())
        if total <= 0:
            return {}
        return {label: p / total for label, p in proba.items()}

    def score_many(self, batch: Batch) -> list[Signal]:
        warm = self.n_learned >= self.warmup
        model_probas = self.predict_proba_many(batch) if warm else [{}] * len(batch)
        user_probas = batch.user_probas or [None] * len(batch)
        signals = []
        for label, model_proba, user_proba in zip(batch.labels, model_probas, user_probas):
            proba = blend(model_proba, user_proba, self.user_weight)
            if not proba:
                signals.append(NEUTRAL)
                continue
            predicted = max(proba, key=proba.get)
            p_label = proba.get(label, 0.0)
            flagged = predicted != label and proba[predicted] >= self.confidence
            details = {"p_label": round(p_label, 4), "predicted": predicted,
                       "p_predicted": round(proba[predicted], 4)}
            if user_proba:
                details["user_model"] = True
            signals.append(Signal(float(1.0 - p_label), flagged,
                                  predicted if predicted != label else None, details))
        return signals

    def learn_many(self, batch: Batch) -> None:
        for x, label in zip(self._features(batch.vectors), batch.labels):
            self._classifier.learn_one(x, label)
        self._seen_labels.update(batch.labels)
        self.n_learned += len(batch)
