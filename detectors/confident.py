"""Streaming confident learning: cleanlab's rule over blended out-of-sample probabilities."""

from __future__ import annotations

import math

import numpy as np
from cleanlab.rank import get_label_quality_scores
from pydantic import Field

from detectors.base import NEUTRAL, Batch, Detector, LabelIndex, Signal
from detectors.blending import Blend
from detectors.lda import FoldLDA
from detectors.model import RandomProjection, UserPrediction
from detectors.neighbors import NeighborIndex, NeighborSearch
from detectors.registry import register
from detectors.noise import (Calibration, ClassThresholds, NoiseBudget, SourceMix, batch_label_issues,
                             confident_disagreement, label_margin)


@register
class ConfidentLearning(Detector):
    """Confident learning (Northcutt et al.), computed online over blended evidence.

    Out-of-sample class probabilities come from several sources, blended *before* thresholding:
    a similarity-weighted vote of past neighbours (:class:`NeighborIndex`), a cross-fitted
    shrinkage LDA (:class:`~detectors.lda.FoldLDA`), and the producer's own prediction when a
    message carries one. Neighbours and model share their weight in the proportion that ranks the
    given labels best on samples not learned yet (:class:`SourceMix`).
    Per-class thresholds are kept online (:class:`ClassThresholds`), and a sample is flagged by
    cleanlab's rule (:func:`confident_disagreement`). The score is ``1 - `` cleanlab's label
    quality score (``cleanlab.rank.get_label_quality_scores``) of the blended probabilities.

    Like cleanlab's default filters, the rule alone is not enough: a sample is flagged only within
    its label's estimated noise rate (:class:`NoiseBudget`, ``prune_by_noise_rate`` online). When a
    whole window is re-scored at once, ``cleanlab.filter.find_label_issues`` itself decides.

    Both sources stay out of sample when an old sample is re-scored (leave-one-out neighbours,
    the model of the sample's own fold), so :meth:`reaudit` supports retrospective re-audit.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> detector = ConfidentLearning(warmup=20, min_class_count=5)
    >>> for _ in range(5):
    ...     which = rng.integers(0, 2, 40)
    ...     _ = detector.process_many(Batch.of(np.where(which[:, None] == 1, 3.0, -3.0) + rng.normal(size=(40, 4)),
    ...                                        ["ab"[w] for w in which]))
    >>> signal, = detector.score_many(Batch.of([[3.0, 3.0, 3.0, 3.0]], ["a"]))
    >>> (signal.flagged, signal.suggested_label, signal.score > 0.9)
    (True, 'b', True)
    """

    name = "confident"

    class Params(NeighborSearch, UserPrediction):
        neighbor_weight: float = Field(1.0, ge=0, description="Weight of the neighbour vote in confident learning.")
        cross_fit_weight: float = Field(
            1.0, ge=0, description="Weight of the cross-fitted LDA model in confident learning (0 turns it off); "
                                   "with neighbours, the data chooses how the two share their weights' sum.")
        cross_fit_features: int = Field(
            384, ge=1, description="Wider vectors are randomly projected to this many for that model.")
        online_budget_share: float = Field(
            0.25, gt=0, le=1, description="Share of a label's estimated noise rate that first verdicts and each live "
                                          "re-audit may flag (the final re-audit of `audit` uses all of it).")
        provisional_budget_share: float = Field(
            0.5, gt=0, le=1, description="Share of a label's estimated noise rate that flags may use while the "
                                         "calibration is provisional (from the first learning step alone); the "
                                         "monitor sends them only where every other detector flags too.")
        n_folds: int = Field(5, ge=2, description="Folds of the cross-fitted model.")
        min_class_count: int = Field(5, ge=1, description="Samples of a label before it gets a threshold.")
        confident_warmup: int = Field(50, ge=0, description="Samples confident learning learns before judging.")

    @classmethod
    def from_params(cls, p: Params, seed: int) -> ConfidentLearning:
        return cls(k=p.neighbors_k, per_class=p.neighbors_per_class, n_folds=p.n_folds,
                   neighbor_weight=p.neighbor_weight, model_weight=p.cross_fit_weight, user_weight=p.user_weight,
                   min_class_count=p.min_class_count, warmup=p.confident_warmup,
                   model_max_features=p.cross_fit_features, budget_share=p.online_budget_share,
                   provisional_budget_share=p.provisional_budget_share, seed=seed,
                   search=p.neighbor_search)

    def __init__(self, *, k: int = 10, per_class: int = 1000, n_folds: int = 5, neighbor_weight: float = 1.0,
                 model_weight: float = 1.0, user_weight: float = 0.5, min_class_count: int = 5, warmup: int = 50,
                 model_max_features: int = 384, budget_share: float = 0.25, reaudit_budget_share: float | None = None,
                 provisional_budget_share: float = 0.5,
                 quality_method: str = "self_confidence", seed: int = 0, search: str = "brute"):
        self.k = k
        self.per_class = per_class
        self.n_folds = n_folds
        self.neighbor_weight = neighbor_weight
        self.model_weight = model_weight
        self.user_weight = user_weight
        self.min_class_count = min_class_count
        self.warmup = warmup
        self.model_max_features = model_max_features
        self.budget_share = budget_share
        # live re-audits spend like first verdicts: a flag sent while streaming cannot be taken back
        self.reaudit_budget_share = budget_share if reaudit_budget_share is None else reaudit_budget_share
        self.provisional_budget_share = provisional_budget_share
        self.quality_method = quality_method
        self.seed = seed
        self.classes = LabelIndex()
        self.neighbors = (NeighborIndex(self.classes, k=k, per_class=per_class, seed=seed, search=search)
                          if neighbor_weight > 0 else None)
        self.model = FoldLDA(self.classes, n_folds=n_folds) if model_weight > 0 else None
        self._projection = RandomProjection(model_max_features, seed=seed)
        self.mix = SourceMix()
        self.thresholds = ClassThresholds(min_class_count)
        self.budget = NoiseBudget(per_class, min_class_count, seed=seed)
        self._learned_per_class = np.zeros(0, dtype=np.int64)
        self.n_learned = 0
        # out-of-sample probabilities computed while judging the samples not learned yet: the state
        # that produced them is the state they are learned from, so learn_many reuses them
        self._scored: list[tuple[Batch, np.ndarray]] = []
        self._scored_rows = 0

    def __getstate__(self) -> dict:
        # the probabilities of the step being judged are a cache: learn_many recomputes them alike
        return {**self.__dict__, "_scored": [], "_scored_rows": 0}

    @property
    def neighbor_index(self) -> NeighborIndex | None:
        return self.neighbors

    def __repr__(self) -> str:
        return f"ConfidentLearning(k={self.k}, neighbor_weight={self.neighbor_weight}, model_weight={self.model_weight})"

    def _user_proba(self, batch: Batch) -> np.ndarray | None:
        if not batch.user_probas or not any(batch.user_probas):
            return None
        for probas in batch.user_probas:
            for label in probas or ():
                self.classes.id_of(label)
        out = np.zeros((len(batch), len(self.classes)))
        for row, probas in enumerate(batch.user_probas):
            for label, p in (probas or {}).items():
                out[row, self.classes.id_of(label)] = p
        return out

    def _sources(self, batch: Batch, *, reuse: bool = False, neighbors: bool = True) -> dict[str, np.ndarray]:
        """Each source's out-of-sample probabilities over :attr:`classes` (sources without evidence left
        out); ``reuse``: the samples were searched before (a re-audit), see :class:`NeighborIndex`;
        without ``neighbors``, every source but the neighbour vote."""
        self.classes.encode(batch.labels)
        user = self._user_proba(batch)
        n_classes = len(self.classes)
        sources = {}
        if neighbors and self.neighbors is not None and self.n_learned >= self.warmup:
            sources["neighbors"] = self.neighbors.predict_proba(batch.vectors, batch.keys(), reuse=reuse)
        if self.model is not None and self.n_learned >= self.warmup:
            sources["model"] = self.model.predict_proba(self._model_features(batch.vectors), batch.keys())
        if user is not None:
            sources["user"] = user
        return {name: _padded(p, n_classes) for name, p in sources.items()}

    def _model_features(self, vectors: np.ndarray) -> np.ndarray:
        projection = getattr(self, "_projection", None)  # (older checkpoints' model projects by itself)
        vectors = np.asarray(vectors, dtype=np.float32)
        return vectors if projection is None else projection.transform(vectors)

    @property
    def blend(self) -> Blend:
        """How the sources are averaged now (:class:`~detectors.blending.Blend`)."""
        share = self.mix.model_share if hasattr(self, "mix") else 0.5  # (older checkpoints have no mix)
        return Blend(self.neighbor_weight, self.model_weight, self.user_weight, share)

    def _blend(self, sources: dict[str, np.ndarray], n_rows: int) -> np.ndarray:
        return self.blend(sources, (n_rows, len(self.classes)))

    def blended_proba(self, batch: Batch, *, reuse: bool = False) -> np.ndarray:
        """Out-of-sample probabilities over :attr:`classes`, averaged over the sources with evidence."""
        return self._blend(self._sources(batch, reuse=reuse), len(batch))

    def _judge(self, proba: np.ndarray, label_ids: np.ndarray, thresholds: np.ndarray,
               flags: np.ndarray | None = None) -> list[Signal]:
        rule, best = confident_disagreement(proba, label_ids, thresholds)
        if flags is None:
            flags = rule & self.calibration.budget.within(label_margin(proba, label_ids), label_ids,
                                                          self._share(self.budget_share))
        if not len(proba):
            return []
        quality = get_label_quality_scores(label_ids, proba, method=self.quality_method)
        rows = np.arange(len(proba))
        # every per-row number at once, as Python floats; the loop only assembles signals
        columns = zip((proba.sum(axis=1) == 0).tolist(), (1.0 - quality).tolist(),
                      np.asarray(flags, dtype=bool).tolist(), best.tolist(), proba[rows, label_ids].tolist(),
                      proba[rows, best].tolist(), thresholds[best].tolist())
        signals = []
        for empty, score, flagged, suggested_id, p_label, p_suggested, threshold in columns:
            if empty:
                signals.append(NEUTRAL)
                continue
            signals.append(Signal(score, flagged, self.classes.labels[suggested_id] if flagged else None,
                                  {"p_label": round(p_label, 4), "p_suggested": round(p_suggested, 4),
                                   "threshold": round(threshold, 4) if math.isfinite(threshold) else None}))
        return signals

    def score_many(self, batch: Batch) -> list[Signal]:
        if len(batch) == 0:
            return []
        label_ids = self.classes.encode(batch.labels)
        sources = self._sources(batch)
        self._remember(batch, sources)
        return self._judge(self._blend(sources, len(batch)), label_ids,
                           self.calibration.thresholds.values(len(self.classes)))

    def estimated_error_rate(self) -> float:
        """The share of recent learned samples mislabelled, from their most typical samples (:meth:`Calibration.estimated_error_rate`)."""
        return self.calibration.estimated_error_rate()

    # class defaults: older checkpoints have neither
    provisional_calibration: Calibration | None = None
    provisional_budget_share: float = 0.5

    @property
    def calibration(self) -> Calibration:
        """The thresholds and noise budget in force: the provisional calibration of a first step judged
        blind (:meth:`learn_many`) until a step judged with evidence is learned, then the one learned
        from every such step."""
        return self.provisional_calibration or Calibration(self.thresholds, self.budget)

    @property
    def provisional(self) -> bool:
        return self.provisional_calibration is not None

    def _share(self, settled: float) -> float:
        """The share of the noise budget a live flag may use: ``settled`` once the calibration is, and
        ``provisional_budget_share`` before, where the monitor asks every other detector to agree."""
        return self.provisional_budget_share if self.provisional else settled

    def reaudit(self, batch: Batch, *, final: bool = False, prove: bool = True) -> list[Signal | None]:
        """Re-judge learned samples out of sample; ``final`` refits the thresholds over this batch
        alone and lets ``cleanlab.filter.find_label_issues`` decide, as batch cleanlab would over a
        whole dataset.

        **The proof** (a live re-audit with ``prove``). The neighbour vote enters the blend with a
        known weight, so where it is only known to lie between bounds, each blended probability
        lies in an interval (:meth:`Blend.clean_within`). First with no bound at all (any vote from 0 to
        1: the model alone decides), then with the bounds the index gives from the candidates it
        cached (:meth:`NeighborIndex.vote_bounds`, exact where they prove the full search's vote):
        a row that no vote in its interval can flag is answered ``None``, and only the rows left
        are searched in full. Most correctly labelled samples are proven clean.
        """
        label_ids = self.classes.encode(batch.labels)
        if final:
            proba = self.blended_proba(batch, reuse=True)
            return self._judge(proba, label_ids, ClassThresholds.fit(proba, label_ids),
                               batch_label_issues(proba, label_ids))
        n_rows, n_classes = len(batch), len(self.classes)
        calibration = self.calibration
        thresholds = calibration.thresholds.values(n_classes)
        sources = self._sources(batch, neighbors=False)
        judged = np.arange(n_rows)
        if self.neighbors is not None and self.n_learned >= self.warmup:
            cutoffs = calibration.budget.cutoffs(label_ids, self._share(self.reaudit_budget_share))
            votes = np.zeros((n_rows, n_classes))
            search = judged
            if prove and n_classes >= 2:
                search, judged = self._unproven(batch, sources, label_ids, thresholds, cutoffs, votes)
            if len(search):
                ids = batch.keys()
                votes[search] = _padded(self.neighbors.predict_proba(
                    batch.vectors[search], [ids[i] for i in search], reuse=not prove), n_classes)
            sources = {"neighbors": votes, **sources}
        sources = {name: proba[judged] for name, proba in sources.items()}
        proba, own = self._blend(sources, len(judged)), label_ids[judged]
        rule, _ = confident_disagreement(proba, own, thresholds)
        within = calibration.budget.within(label_margin(proba, own), own, self._share(self.reaudit_budget_share))
        out: list[Signal | None] = [None] * n_rows
        for row, signal in zip(judged.tolist(), self._judge(proba, own, thresholds, rule & within)):
            out[row] = signal
        return out

    def _unproven(self, batch: Batch, sources: dict[str, np.ndarray], label_ids: np.ndarray, thresholds: np.ndarray,
                  cutoffs: np.ndarray, votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The proof of :meth:`reaudit`: ``(search, judged)``, the rows whose neighbour vote still needs a
        full search, and every row to re-judge (those plus the rows whose cached candidates gave the
        exact vote, written into ``votes``). The rows left out are proven clean."""
        n_rows, n_classes = votes.shape
        blend = self.blend
        clean = blend.clean_within(sources, label_ids, thresholds, cutoffs, np.zeros((n_rows, n_classes)),
                                   np.ones((n_rows, n_classes)))
        unsure = np.flatnonzero(~clean)
        if not len(unsure):
            return unsure, unsure
        ids = batch.keys()
        bounds = self.neighbors.vote_bounds(batch.vectors[unsure], [ids[i] for i in unsure])
        low, high = _padded(bounds.low, n_classes), _padded(bounds.high, n_classes)
        exact, loose = unsure[bounds.exact], unsure[~bounds.exact]
        votes[exact] = low[bounds.exact]
        open_ = ~blend.clean_within({name: proba[loose] for name, proba in sources.items()}, label_ids[loose],
                                    thresholds, cutoffs[loose], low[~bounds.exact], high[~bounds.exact])
        search = loose[open_]
        return search, np.sort(np.concatenate([exact, search]))

    MAX_REMEMBERED_ROWS = 65_536

    def _remember(self, batch: Batch, sources: dict[str, np.ndarray]) -> None:
        if self._scored_rows + len(batch) > self.MAX_REMEMBERED_ROWS:  # scored, never learned: start over
            self._scored, self._scored_rows = [], 0
        self._scored.append((batch, sources))
        self._scored_rows += len(batch)

    def _recall(self, batch: Batch) -> dict[str, np.ndarray] | None:
        """The probabilities :meth:`score_many` computed for exactly these samples since the last learning, if any.

        Nothing was learned in between, so recomputing them would give the same numbers: at a
        learning step, that saves a second neighbour search over every sample of the step.
        """
        scored, self._scored, self._scored_rows = self._scored, [], 0
        if not scored or [k for seen, _ in scored for k in seen.keys()] != list(batch.keys()):
            return None
        if [p for seen, _ in scored for p in (seen.user_probas or [None] * len(seen))] != list(
                batch.user_probas or [None] * len(batch)):
            return None
        if not np.array_equal(np.vstack([seen.vectors for seen, _ in scored]), batch.vectors):
            return None
        if any(not isinstance(sources, dict) or sources.keys() != scored[0][1].keys() for _, sources in scored):
            return None  # (a checkpoint of an older release remembered blended arrays)
        n_classes = len(self.classes)
        return {name: np.vstack([np.pad(sources[name], ((0, 0), (0, n_classes - sources[name].shape[1])))
                                 for _, sources in scored]) for name in scored[0][1]}

    def learn_many(self, batch: Batch) -> None:
        if len(batch) == 0:
            return
        label_ids = self.classes.encode(batch.labels)
        sources = self._recall(batch)
        if sources is None:
            sources = self._sources(batch)
        if hasattr(self, "mix"):
            self.mix.update(sources.get("neighbors"), sources.get("model"), label_ids)
        proba = self._blend(sources, len(batch))
        learned = np.pad(self._learned_per_class, (0, len(self.classes) - len(self._learned_per_class)))
        judged_blind = not (proba.sum(axis=1) > 0).any()
        annotated = (None if batch.annotated is None else
                     np.array([-1 if label is None else self.classes.id_of(label) for label in batch.annotated]))
        Calibration(self.thresholds, self.budget).learn(proba, label_ids, self._teaches(proba, label_ids, learned),
                                                        annotated)
        if self.neighbors is not None:
            self.neighbors.learn(batch.vectors, label_ids, batch.keys())
        if self.model is not None:
            self.model.learn(self._model_features(batch.vectors), label_ids, batch.keys())
        self._learned_per_class = np.bincount(label_ids, minlength=len(self.classes)) + learned
        self.n_learned += len(batch)
        self.provisional_calibration = self._cross_fit(batch, label_ids) if judged_blind else None

    def _cross_fit(self, batch: Batch, label_ids: np.ndarray) -> Calibration | None:
        """A provisional calibration from a step judged blind (nothing was learned before it), once it is learned.

        cleanlab's cross-validation, once: each sample is predicted by what the step taught, still out
        of sample (the model of its own fold, which has not learned it; its neighbours, itself left
        out). A step judged with evidence replaces it: those models saw the whole step, where each
        fold's model here saw four fifths of it, and the thresholds and budget it learns stay.
        """
        if self.n_learned < self.warmup:
            return None
        proba = self.blended_proba(batch)
        calibration = Calibration.fresh(self.min_class_count, self.per_class, self.seed)
        calibration.learn(proba, label_ids, self._teaches(proba, label_ids, self._learned_per_class))
        return calibration

    def _teaches(self, proba: np.ndarray, label_ids: np.ndarray, learned_per_class: np.ndarray) -> np.ndarray:
        """The rows whose probabilities may teach a calibration: those with evidence, of labels with at
        least ``min_class_count`` samples learned when they were predicted (a label the evidence could
        not know yet says nothing about its threshold)."""
        return (proba.sum(axis=1) > 0) & (learned_per_class[label_ids] >= self.min_class_count)


def _padded(proba: np.ndarray, n_classes: int) -> np.ndarray:
    """``proba`` with zero columns for the labels met since it was computed."""
    return np.pad(proba, ((0, 0), (0, n_classes - proba.shape[1])))
