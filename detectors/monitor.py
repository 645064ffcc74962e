"""One dataset's detectors, combiner and re-audit window, run together over micro-batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.assessment import Assessment, LateVerdict
from detectors.base import Batch, Detector, Signal
from detectors.budget import LIVE_SHARE, FlagBudget, allowance
from detectors.combine import Combiner
from detectors.config import EVIDENCE, MonitorConfig
from detectors.context import ReviewContext
from detectors.corrections import FalseAlarmMemory
from detectors.reviewed import ConfirmedShare
from detectors.schedule import Judged, ReauditSchedule
from detectors.threads import on_one_thread


@dataclass
class LabelMonitor:
    """Runs one dataset's detectors test-then-train, combines the voters, and re-audits.

    **Learning steps.** Every sample is judged the moment it arrives, by detectors that have
    learned every *completed* step of ``learning_step`` samples before it. A step is learned once
    it is complete. So a verdict depends only on the dataset's sample sequence, never on how the
    stream was cut into micro-batches: a replay after a crash, polled in other batch sizes,
    judges every sample exactly as the first run did.

    **Retrospective re-audit.** The last ``reaudit_window`` samples are remembered. A sample whose
    verdict is clean is re-scored with all the evidence gathered since, when ``reaudit_delay``
    newer samples have been learned, then again at four times that age, sixteen times, and so on
    while it is in the window (detectors that cannot re-score out of sample keep their first
    signal). :meth:`flush` learns the unfinished step and re-scores every clean sample still in
    the window, with thresholds refitted over the window, as a batch method would. A sample
    flagged by a re-audit comes back as a :class:`LateVerdict`.

    >>> monitor = LabelMonitor.from_config(MonitorConfig(n_clusters=2, model_warmup=10))
    >>> assessments, late = monitor.process(Batch.of(np.eye(4)[[0, 1, 0, 1]], ["a", "b", "a", "b"]))
    >>> [a.verdict.flagged for a in assessments], late
    ([False, False, False, False], [])
    >>> monitor.n_seen, monitor.n_learned  # judged, but the step of 500 is not complete yet
    (4, 0)
    """

    detectors: list[Detector]
    combiner: Combiner = field(default_factory=lambda: Combiner.parse("union"))
    voters: tuple[str, ...] | None = None
    reaudit_window: int = 10_000
    reaudit_delay: int = 250
    learning_step: int = 500
    dimension: int | None = None
    n_seen: int = 0
    n_learned: int = 0
    false_alarms: FalseAlarmMemory = field(default_factory=FalseAlarmMemory, repr=False)
    _unlearned: list = field(default_factory=list, repr=False)
    _corrections: list = field(default_factory=list, repr=False)
    schedule: ReauditSchedule = field(init=False, repr=False)
    budget: FlagBudget = field(default_factory=FlagBudget, repr=False)
    confirmed: ConfirmedShare = field(default_factory=ConfirmedShare, repr=False)  # reviewers' answers

    def __post_init__(self) -> None:
        self.schedule = ReauditSchedule(self.reaudit_window, self.reaudit_delay)
        for detector in self.detectors:  # candidates for every sample a re-audit may search again
            if detector.neighbor_index is not None:
                detector.neighbor_index.cache_candidates(self.reaudit_window)

    def __setstate__(self, state: dict) -> None:
        if "schedule" not in state:  # an older release's checkpoint: the monitor held these itself
            schedule = ReauditSchedule(state["reaudit_window"], state["reaudit_delay"])
            # (before re-audits could be deferred there was no queue: they ran at once; before the live
            # flag budget, no flags were counted)
            schedule.window, schedule.due, schedule.owed = state.pop("_window"), state.pop("_due", []), state.pop("_owed", 0)
            budget = FlagBudget(state.pop("n_flagged_live", 0), state.pop("_budget", {"at_step": 0, "first": 0, "late": 0}))
            state = {**state, "schedule": schedule, "budget": budget}
        state.setdefault("confirmed", ConfirmedShare())  # before answers scaled the estimate
        self.__dict__.update(state)

    @property
    def n_flagged_live(self) -> int:
        """Flags sent while streaming (first verdicts and re-audits)."""
        return self.budget.n_flagged_live

    @classmethod
    def from_config(cls, config: MonitorConfig) -> LabelMonitor:
        return cls(config.build_detectors(), Combiner.parse(config.policy), tuple(config.voters),
                   config.reaudit_window, config.reaudit_delay, config.learning_step)

    def detector(self, name: str) -> Detector | None:
        return next((d for d in self.detectors if d.name == name), None)

    def _assess(self, signals: dict[str, Signal], provisional: frozenset[str] = frozenset()) -> Assessment:
        voting = {name: s for name, s in signals.items() if self.voters is None or name in self.voters}
        verdict = self.combiner.combine(voting)
        if verdict.flagged and provisional and all(name in provisional for name, s in voting.items() if s.flagged):
            corroborating = [d.name for d in self.detectors if d.name not in provisional and d.name in signals]
            if not corroborating or not all(signals[name].flagged for name in corroborating):
                verdict = Assessment(verdict, signals).withdrawn(provisional=sorted(provisional),
                                                                 not_corroborated_by=corroborating).verdict
        return Assessment(verdict, signals)

    def _provisional(self) -> frozenset[str]:
        """The detectors whose calibration is provisional (:attr:`~detectors.base.Detector.provisional`).

        A flag that only they raise is sent only where every other detector flags the sample too,
        and never without one: their calibration comes from the first step alone (on text, from 500
        samples it over-estimates the noise, and its flags were right far less often than later ones)."""
        return frozenset(d.name for d in self.detectors if d.provisional)

    @on_one_thread
    def process(self, batch: Batch, payloads: Sequence[Any] | None = None, *,
                evidence: Mapping[str, Sequence[Signal | None]] | None = None,
                defer_reaudits: bool = False) -> tuple[list[Assessment], list[LateVerdict]]:
        """Judge every sample of ``batch`` out of sample; learn each completed step, then run due re-audits.

        ``evidence`` holds signals from outside the detectors (:data:`~detectors.config.EVIDENCE`,
        such as the consensus of a sample's annotators), one per sample or ``None``: they join the
        sample's signals, vote when named among the voters, and keep their value in re-audits.

        With ``defer_reaudits`` the re-audits of a completed step wait in a queue instead, and each
        call adds its share of them to what is owed, in proportion to the samples it judged against
        those still due before the next step: :meth:`run_owed_reaudits` runs that, once the batch's
        first verdicts are out. So the cost is spread evenly over the batches in between and no
        first verdict waits for a re-audit. :meth:`run_reaudits` runs more (when the stream is
        idle, say), and the next step runs whatever is left before it learns. Nothing is learned
        between a step and its re-audits, so their outcome is the same either way.
        """
        if len(batch) == 0:
            return [], []
        if self.dimension is None:
            self.dimension = batch.vectors.shape[1]
        elif batch.vectors.shape[1] != self.dimension:
            raise ValueError(f"vectors have dimension {batch.vectors.shape[1]}, this dataset has {self.dimension}")
        payloads = payloads if payloads is not None else [None] * len(batch)
        assessments: list[Assessment] = []
        late: list[LateVerdict] = []
        start = 0
        while start < len(batch):
            end = min(len(batch), start + self.learning_step - len(self._unlearned))
            part = batch if (start, end) == (0, len(batch)) else batch.take(range(start, end))
            assessments += self._judge(part, payloads[start:end],
                                       {name: signals[start:end] for name, signals in (evidence or {}).items()})
            if len(self._unlearned) >= self.learning_step:
                late += self._learn_step(part if len(part) == len(self._unlearned) else None)
                if not defer_reaudits:
                    late += self.run_reaudits()
            start = end
        if defer_reaudits:
            self.schedule.owe(len(batch), self.learning_step - len(self._unlearned))
        return assessments, late

    def recent(self, n: int) -> list[tuple[str, str, int | None]]:
        """The last ``n`` samples of the re-audit window as (sample id, label, cluster id), oldest first.
        Safe to call from another thread than the one processing (:meth:`ReauditSchedule.recent`)."""
        return [(j.sample_id, j.label, j.assessment.cluster_id) for j in self.schedule.recent(n)]

    def suspect_share(self, scores: Sequence[float]) -> list[float]:
        """For each score, the share of the re-audit window's samples whose latest score is at least as
        high (0.05: among the top 5% most suspect); 1.0 for every score while the window is empty.

        >>> monitor = LabelMonitor.from_config(MonitorConfig())
        >>> monitor.suspect_share([0.9])
        [1.0]
        """
        if not len(scores):
            return []
        window = np.sort([j.assessment.verdict.score for j in self.schedule.window])
        if not len(window):
            return [1.0] * len(scores)
        at_least = len(window) - np.searchsorted(window, np.asarray(scores, dtype=float), side="left")
        return (np.maximum(at_least, 1) / len(window)).tolist()

    @property
    def pending_reaudits(self) -> int:
        """Re-audits of the last learned step that :meth:`run_reaudits` has not run yet."""
        return len(self.schedule.due)

    @on_one_thread
    def run_reaudits(self, max_samples: int | None = None) -> list[LateVerdict]:
        """Run up to ``max_samples`` (default: all) of the queued re-audits; returns the new late verdicts."""
        return self._reaudit(self.schedule.take(max_samples), refit_thresholds=False)

    def run_owed_reaudits(self) -> list[LateVerdict]:
        """Run the share of the queued re-audits that the batches judged since the last such call owe
        (see :meth:`process`); returns the new late verdicts."""
        return self.run_reaudits(self.schedule.owed)

    def _judge(self, batch: Batch, payloads: Sequence[Any],
               evidence: Mapping[str, Sequence[Signal | None]]) -> list[Assessment]:
        per_detector = {d.name: d.score_many(batch) for d in self.detectors}
        provisional = self._provisional()
        assessments = [self._assess({**{name: sigs[i] for name, sigs in per_detector.items()},
                                     **{name: sigs[i] for name, sigs in evidence.items() if sigs[i] is not None}},
                                    provisional)
                       for i in range(len(batch))]
        assessments = self._within_budget(self.false_alarms.hold_back(assessments, batch.vectors, batch.labels),
                                          late=False)
        assessments = ReviewContext(self.detectors).add(assessments, batch)  # every stored neighbour arrived before
        probas = batch.user_probas or [None] * len(batch)
        judged = [Judged(batch.vectors[i], batch.labels[i], probas[i], batch.ids[i], payloads[i], assessment,
                         self.n_seen + i, self.schedule.first_due(self.n_seen + i))
                  for i, assessment in enumerate(assessments)]
        self.schedule.admit(judged)
        self._unlearned += judged
        self.n_seen += len(batch)
        return assessments

    def estimated_error_rate(self) -> float | None:
        """The share of labels estimated wrong: the first voting detector's estimate, corrected by the share
        of answered flags that reviewers confirmed (:attr:`ConfirmedShare.correction
        <detectors.reviewed.ConfirmedShare.correction>`; 1 before any answer). The flag budgets follow it.
        ``None``: no detector estimates one, and flags have no limit."""
        rates = (d.estimated_error_rate() for d in self.detectors if self.voters is None or d.name in self.voters)
        rate = next((rate for rate in rates if rate is not None), None)
        if rate is None:
            return None
        return rate * self.confirmed.correction

    def _allowance(self, n: int, *, live: bool = False) -> float | None:
        """How many flags ``n`` samples allow (:func:`~detectors.budget.allowance`) at the :meth:`estimated_error_rate`,
        or while streaming (``live``) at :data:`~detectors.budget.LIVE_SHARE` of it; ``None``: no limit."""
        rate = self.estimated_error_rate()
        return allowance(None if rate is None else rate * (LIVE_SHARE if live else 1.0), n)

    def _within_budget(self, assessments: list[Assessment], *, late: bool) -> list[Assessment]:
        """Withdraw flags beyond the live flag budget (:class:`~detectors.budget.FlagBudget`): first verdicts
        at their stream positions, re-audits at the samples learned."""
        return self.budget.within(assessments, late=late, allowance=lambda n: self._allowance(n, live=True),
                                  first_position=self.n_learned if late else self.n_seen)

    def correct(self, sample_id: str, outcome: str, corrected_label: str | None = None) -> str:
        """Apply a reviewer's answer about a recent sample; returns what was done.

        - ``false_alarm``: the sample is remembered, and similar samples with its label need a
          higher score to be flagged (:class:`~detectors.corrections.FalseAlarmMemory`);
        - ``confirmed`` before the sample was learned: it is learned with ``corrected_label``, or
          not at all without one, so the wrong label never trains the detectors;
        - ``confirmed`` after: the corrected label is learned with the next step, next to the wrong
          one (online models cannot unlearn).

        Either answer also counts towards the share of flags confirmed, which scales
        :meth:`estimated_error_rate`. ``"unknown"`` when the sample has left the re-audit window.
        """
        if outcome not in ("confirmed", "false_alarm"):
            raise ValueError(f"unknown outcome {outcome!r}")
        self.confirmed.add(outcome)
        entry = self.schedule.find(sample_id)
        if entry is None:
            return "unknown"
        if outcome == "false_alarm":
            self.false_alarms.add(entry.vector, entry.label, entry.assessment.verdict.score)
            return "false_alarm"
        if any(p is entry for p in self._unlearned):
            if corrected_label is None:
                entry.excluded = True
                return "excluded"
            entry.annotated, entry.label = entry.label, corrected_label
            return "relabelled"
        if corrected_label is None:
            return "noted"
        self._corrections.append(Judged(entry.vector, corrected_label, entry.user_proba, entry.sample_id, None,
                                        entry.assessment, entry.arrived, entry.due, reviewed_copy=True))
        return "queued"

    def _learn_step(self, scored: Batch | None = None) -> list[LateVerdict]:
        """Run what is left of the previous step's re-audits, learn the samples judged since, and
        queue the re-audits of the clean ones now due; returns the late verdicts of the former.

        ``scored`` is the batch object just scored when it is exactly the step, so detectors can
        reuse what they computed while scoring it. Reviewers' corrections are learned with it.
        """
        late = self.run_reaudits()
        self._learn_pending(scored)
        self.budget.settle()
        self.schedule.queue_due(self.n_learned, lambda judged: not judged.assessment.verdict.flagged)
        return late

    def _learn_pending(self, scored: Batch | None = None) -> None:
        """Teach every detector the judged-but-unlearned samples (less excluded ones) and the corrections."""
        to_learn = [p for p in self._unlearned if not p.excluded] + self._corrections
        if scored is not None and len(to_learn) == len(scored) and not self._corrections:
            batch = scored
        else:
            batch = _batch_of(to_learn) if to_learn else None
        if batch is not None:
            for detector in self.detectors:
                detector.learn_many(batch)
        self.n_learned += len(self._unlearned)
        self._unlearned, self._corrections = [], []

    @on_one_thread
    def flush(self, *, every: bool = False) -> list[LateVerdict]:
        """Run queued re-audits, learn the unfinished step, then re-audit every clean sample in the
        window, thresholds refitted.

        With ``every``, the final re-audit returns its verdict on every sample it re-scored, clean
        ones too: the end of the input's last word on each sample, with all the evidence there is.
        """
        late = self.run_reaudits()
        self._learn_pending()
        pending = [p for p in self.schedule.window if not p.assessment.verdict.flagged]
        return late + self._reaudit(pending, refit_thresholds=True, every=every)

    def _reaudit(self, pending: list[Judged], *, refit_thresholds: bool, every: bool = False) -> list[LateVerdict]:
        if not pending:
            return []
        batch = _batch_of(pending)
        live = not refit_thresholds and not every
        voting = [d for d in self.detectors if self.voters is None or d.name in self.voters]
        rescored = {d.name: d.reaudit(batch, final=refit_thresholds, prove=live) for d in voting}
        if all(signals is None for signals in rescored.values()) and not any(
                "held_back" in entry.assessment.verdict.details for entry in pending):
            return []  # no voter can re-score, no flag was held back: every verdict would be the one already given
        if live:  # a live re-audit reports flags only: the rows no voter can flag are done
            pending, batch, rescored = self._flaggable(pending, batch, rescored)
            if not pending:
                return []
        rescored = {d.name: rescored[d.name] if d.name in rescored else d.reaudit(batch, final=refit_thresholds,
                                                                                  prove=False)
                    for d in self.detectors}  # in detector order, as first verdicts list them
        late = []
        # the final re-audit refits its thresholds over the window (batch cleanlab): nothing provisional is used
        provisional = frozenset() if refit_thresholds else self._provisional()
        assessments = [self._assess(self._signals_of(entry, i, rescored), provisional)
                       for i, entry in enumerate(pending)]
        assessments = self.false_alarms.hold_back(assessments, batch.vectors, batch.labels)
        if refit_thresholds:  # the final re-audit: cleanlab's find_label_issues decides, within what is left
            assessments = self.budget.within_final(assessments, self._allowance(self.n_learned))
        else:
            assessments = self._within_budget(assessments, late=True)
        assessments = ReviewContext(self.detectors).add(assessments, batch, [entry.arrived for entry in pending],
                                                        self.schedule.arrival)
        for entry, assessment in zip(pending, assessments):
            if assessment.verdict.flagged:
                entry.assessment = assessment
                late.append(LateVerdict(entry.sample_id, entry.payload, assessment))
            elif every:
                late.append(LateVerdict(entry.sample_id, entry.payload, assessment))
        return late

    @staticmethod
    def _signals_of(entry: Judged, row: int, rescored: Mapping[str, Sequence[Signal | None] | None]) -> dict:
        """The re-audit's signals for ``entry`` (row ``row``): each detector's new one (the first one where
        it cannot re-score, unflagged where it proved the row clean), and the evidence it first had."""
        signals = {name: (sigs[row] or _UNFLAGGED) if sigs is not None else entry.assessment.signals[name]
                   for name, sigs in rescored.items()}
        return {**signals, **{name: entry.assessment.signals[name] for name in EVIDENCE
                              if name in entry.assessment.signals}}

    def _flaggable(self, pending: list[Judged], batch: Batch, rescored: dict) -> tuple[list[Judged], Batch, dict]:
        """The rows of a live re-audit that the voters (and voting evidence) flag, with their batch and
        signals. A voter that proved such a row clean without re-scoring it (another voter flags it)
        re-scores it now, so that the verdict's score and details are complete."""
        voting = [self._signals_of(entry, i, rescored) for i, entry in enumerate(pending)]
        keep = [i for i, signals in enumerate(voting) if self.combiner.combine(
            {name: s for name, s in signals.items() if self.voters is None or name in self.voters}).flagged]
        if len(keep) < len(pending):
            pending, batch = [pending[i] for i in keep], batch.take(keep)
            rescored = {name: None if sigs is None else [sigs[i] for i in keep] for name, sigs in rescored.items()}
        for name, sigs in rescored.items():
            proven = [i for i, s in enumerate(sigs or ()) if s is None]
            if proven:
                for i, signal in zip(proven, self.detector(name).reaudit(batch.take(proven), prove=False)):
                    sigs[i] = signal
        return pending, batch, rescored


_UNFLAGGED = Signal(0.0, False)


def _batch_of(entries: Sequence[Judged]) -> Batch:
    has_probas = any(p.user_proba for p in entries)
    reviewed = any(p.annotated is not None or p.reviewed_copy for p in entries)
    return Batch(np.vstack([p.vector for p in entries]), [p.label for p in entries],
                 [p.user_proba for p in entries] if has_probas else None, [p.sample_id for p in entries],
                 [None if p.reviewed_copy else p.annotated or p.label for p in entries] if reviewed else None)
