"""One dataset's detectors, combiner and re-audit window, run together over micro-batches."""

from __future__ import annotations

import math

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from detectors.assessment import Assessment, LateVerdict, SampleContext
from detectors.base import Batch, Detector, Signal
from detectors.combine import Combiner
from detectors.config import EVIDENCE, MonitorConfig
from detectors.corrections import FalseAlarmMemory
from detectors.threads import on_one_thread


REAUDIT_GROWTH = 4
"""Each re-audit of a sample waits this many times longer than the previous one."""

CONTEXT_NEIGHBORS = 5
"""Nearest earlier samples shown with a flagged sample (:class:`~detectors.assessment.SampleContext`)."""


@dataclass(slots=True)
class _Pending:
    vector: np.ndarray
    label: str
    user_proba: Any
    sample_id: str
    payload: Any
    assessment: Assessment
    arrived: int
    due: int
    excluded: bool = False  # a reviewer confirmed the label wrong before it was learned, and gave no better one


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
    _window: deque = field(default_factory=deque, repr=False)
    _unlearned: list = field(default_factory=list, repr=False)
    _corrections: list = field(default_factory=list, repr=False)
    _due: list = field(default_factory=list, repr=False)  # deferred re-audits of the last learned step
    _owed: int = field(default=0, repr=False)  # of those, the share the batches judged since asked for
    n_flagged_live: int = 0  # flags sent while streaming (first verdicts and re-audits)
    _budget: dict = field(default_factory=lambda: {"at_step": 0, "first": 0, "late": 0}, repr=False)

    def __post_init__(self) -> None:
        for detector in self.detectors:  # candidates for every sample a re-audit may search again
            if detector.neighbor_index is not None:
                detector.neighbor_index.cache_candidates(self.reaudit_window)

    def __setstate__(self, state: dict) -> None:
        # checkpoints written before re-audits could be deferred have no queue: they ran at once;
        # those written before the live flag budget count no flags
        self.__dict__.update({"_due": [], "_owed": 0, "n_flagged_live": 0,
                              "_budget": {"at_step": 0, "first": 0, "late": 0}, **state})

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
                verdict = _withdrawn(Assessment(verdict, signals), provisional=sorted(provisional),
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
        if defer_reaudits and self._due:
            until_step = self.learning_step - len(self._unlearned)
            share = -(-(len(self._due) - self._owed) * len(batch) // (len(batch) + until_step))
            self._owed = min(len(self._due), self._owed + share)
        return assessments, late

    def recent(self, n: int) -> list[tuple[str, str, int | None]]:
        """The last ``n`` samples of the re-audit window as (sample id, label, cluster id), oldest first.

        Safe to call from another thread than the one processing: it copies the window, retrying
        if a batch changes it meanwhile.
        """
        for _ in range(10):
            try:
                window = list(self._window)
                break
            except RuntimeError:  # deque mutated during iteration
                continue
        else:
            return []
        return [(p.sample_id, p.label, p.assessment.cluster_id) for p in window[-n:]]

    @property
    def pending_reaudits(self) -> int:
        """Re-audits of the last learned step that :meth:`run_reaudits` has not run yet."""
        return len(self._due)

    @on_one_thread
    def run_reaudits(self, max_samples: int | None = None) -> list[LateVerdict]:
        """Run up to ``max_samples`` (default: all) of the queued re-audits; returns the new late verdicts."""
        count = len(self._due) if max_samples is None else max(0, max_samples)
        now, self._due = self._due[:count], self._due[count:]
        self._owed = max(0, min(self._owed - len(now), len(self._due)))
        return self._reaudit(now, refit_thresholds=False)

    def run_owed_reaudits(self) -> list[LateVerdict]:
        """Run the share of the queued re-audits that the batches judged since the last such call owe
        (see :meth:`process`); returns the new late verdicts."""
        return self.run_reaudits(self._owed)

    def _judge(self, batch: Batch, payloads: Sequence[Any],
               evidence: Mapping[str, Sequence[Signal | None]]) -> list[Assessment]:
        per_detector = {d.name: d.score_many(batch) for d in self.detectors}
        provisional = self._provisional()
        assessments = [self._assess({**{name: sigs[i] for name, sigs in per_detector.items()},
                                     **{name: sigs[i] for name, sigs in evidence.items() if sigs[i] is not None}},
                                    provisional)
                       for i in range(len(batch))]
        assessments = self._within_budget(self._hold_back(assessments, batch.vectors, batch.labels), late=False)
        assessments = self._with_context(assessments, batch)  # every stored neighbour arrived before: no filter
        probas = batch.user_probas or [None] * len(batch)
        for i, assessment in enumerate(assessments):
            arrived = self.n_seen + i
            entry = _Pending(batch.vectors[i], batch.labels[i], probas[i], batch.ids[i], payloads[i],
                             assessment, arrived, arrived + max(self.reaudit_delay, 1))
            self._window.append(entry)
            self._unlearned.append(entry)
        self.n_seen += len(batch)
        while len(self._window) > self.reaudit_window:
            self._window.popleft()
        return assessments

    def _with_context(self, assessments: list[Assessment], batch: Batch,
                      arrived: Sequence[int] | None = None) -> list[Assessment]:
        """Each flagged assessment with its :class:`~detectors.assessment.SampleContext`, taken from
        the state it was judged with: the label mix of its cluster (``cluster_id``; for a re-audit of
        a sample first judged before the clusters were fitted, the cluster it falls in now), and its
        nearest stored samples from the first detector that keeps a neighbour index (one search for
        all the flagged rows).

        ``arrived`` (each row's stream position, for re-audits) leaves out stored samples that arrived
        after the row's own sample; first verdicts need none, since only earlier samples are learned.
        """
        rows = [i for i, a in enumerate(assessments) if a.verdict.flagged]
        if not rows:
            return assessments
        index = next((d.neighbor_index for d in self.detectors if d.neighbor_index is not None), None)
        neighbors: list[list] = [[] for _ in rows]
        if index is not None:
            arrival = None
            if arrived is not None:  # later annotations of one id overwrite: its latest arrival counts
                arrival = {p.sample_id: p.arrived for p in self._window}
                arrived = [arrived[i] for i in rows]
            neighbors = index.nearest(batch.vectors[rows], [batch.ids[i] for i in rows], CONTEXT_NEIGHBORS,
                                      arrival=arrival, arrived=arrived)
        cluster = self.detector("cluster")
        clusters = {i: assessments[i].cluster_id for i in rows} if cluster is not None else {}
        unassigned = [i for i, c in clusters.items() if c is None]
        if unassigned and cluster.is_fitted:  # a re-audit keeps the cluster signal of a first verdict before the fit
            clusters.update(zip(unassigned, cluster.assign(batch.vectors[unassigned]).tolist()))
        out = list(assessments)
        for i, near in zip(rows, neighbors):
            mix = cluster.label_mix(clusters[i]) if clusters else {}
            out[i] = replace(out[i], context=SampleContext(mix, tuple(near)))
        return out

    def _hold_back(self, assessments: list[Assessment], vectors: np.ndarray, labels) -> list[Assessment]:
        """Flags that do not beat a similar reviewed false alarm's score (by a margin) are withdrawn."""
        if not len(self.false_alarms) or not any(a.verdict.flagged for a in assessments):
            return assessments
        bars = self.false_alarms.bar(vectors, labels)
        held = []
        for assessment, bar in zip(assessments, bars.tolist()):
            verdict = assessment.verdict
            if verdict.flagged and verdict.score <= bar:
                assessment = _withdrawn(assessment, held_back="similar to a reviewed false alarm", bar=round(bar, 4))
            held.append(assessment)
        return held

    def _allowance(self, n: int) -> float | None:
        """How many flags may have been sent while streaming after ``n`` samples; ``None``: no limit
        (confident learning does not vote, so its estimate is not about what is flagged)."""
        confident = self.detector("confident")
        if confident is None or (self.voters is not None and "confident" not in self.voters):
            return None
        rate = confident.estimated_error_rate()
        # the estimate's own uncertainty, two binomial standard deviations, and one: a flagrant
        # error on a stream that looked clean so far still gets through
        return rate * n + 2 * math.sqrt(n * rate * (1 - rate)) + 1

    def _within_budget(self, assessments: list[Assessment], *, late: bool) -> list[Assessment]:
        """Withdraw flags beyond the live flag budget.

        First verdicts and re-audits share one budget: no more flags while streaming than the
        label errors that confident learning estimates among the samples seen
        (:meth:`~detectors.ConfidentLearning.estimated_error_rate`), with a margin for the
        uncertainty of that estimate. A withdrawn flag is not lost: its sample stays in the window,
        and a later re-audit may flag it once the budget allows.

        Replays must decide alike however polls cut the stream, and re-audits interleave with
        first verdicts differently for different cuts. So each kind spends against what was spent
        up to the last learning step, plus its own flags since, counted in an order no cut
        changes: first verdicts in stream order, re-audits in queue order. Between two steps the
        two together may overshoot by what each spent since; every step settles the account.
        """
        if not any(a.verdict.flagged for a in assessments):
            return assessments
        state = self._budget
        kept = []
        for i, assessment in enumerate(assessments):
            verdict = assessment.verdict
            if verdict.flagged:
                allowance = self._allowance(self.n_learned if late else self.n_seen + i + 1)
                spent = state["at_step"] + state["late" if late else "first"]
                if allowance is not None and spent + 1 > allowance:
                    assessment = _withdrawn(assessment, over_budget=round(allowance, 1))
                else:
                    state["late" if late else "first"] += 1
                    self.n_flagged_live += 1
            kept.append(assessment)
        return kept

    def _within_final_budget(self, assessments: list[Assessment]) -> list[Assessment]:
        """The final re-audit's share of the one flag budget: what streaming left of the estimated
        number of label errors among the samples learned; beyond it, the flags with the lowest
        scores are withdrawn (ties: the later sample)."""
        allowance = self._allowance(self.n_learned)
        flagged = [i for i, a in enumerate(assessments) if a.verdict.flagged]
        if allowance is None or self.n_flagged_live + len(flagged) <= allowance:
            return assessments
        room = max(0, math.floor(allowance) - self.n_flagged_live)
        kept = set(sorted(flagged, key=lambda i: (-assessments[i].verdict.score, i))[:room])
        return [a if not a.verdict.flagged or i in kept else _withdrawn(a, over_budget=round(allowance, 1))
                for i, a in enumerate(assessments)]

    def correct(self, sample_id: str, outcome: str, corrected_label: str | None = None) -> str:
        """Apply a reviewer's answer about a recent sample; returns what was done.

        - ``false_alarm``: the sample is remembered, and similar samples with its label need a
          higher score to be flagged (:class:`~detectors.corrections.FalseAlarmMemory`);
        - ``confirmed`` before the sample was learned: it is learned with ``corrected_label``, or
          not at all without one, so the wrong label never trains the detectors;
        - ``confirmed`` after: the corrected label is learned with the next step, next to the wrong
          one (online models cannot unlearn).

        ``"unknown"`` when the sample has left the re-audit window.
        """
        entry = next((p for p in reversed(self._window) if p.sample_id == sample_id), None)
        if entry is None:
            return "unknown"
        if outcome == "false_alarm":
            self.false_alarms.add(entry.vector, entry.label, entry.assessment.verdict.score)
            return "false_alarm"
        if outcome != "confirmed":
            raise ValueError(f"unknown outcome {outcome!r}")
        if any(p is entry for p in self._unlearned):
            if corrected_label is None:
                entry.excluded = True
                return "excluded"
            entry.label = corrected_label
            return "relabelled"
        if corrected_label is None:
            return "noted"
        self._corrections.append(_Pending(entry.vector, corrected_label, entry.user_proba, entry.sample_id, None,
                                          entry.assessment, entry.arrived, entry.due))
        return "queued"

    def _learn_step(self, scored: Batch | None = None) -> list[LateVerdict]:
        """Run what is left of the previous step's re-audits, learn the samples judged since, and
        queue the re-audits of the clean ones now due; returns the late verdicts of the former.

        ``scored`` is the batch object just scored when it is exactly the step, so detectors can
        reuse what they computed while scoring it. Reviewers' corrections are learned with it.
        """
        late = self.run_reaudits()
        self._learn_pending(scored)
        self._budget = {"at_step": self.n_flagged_live, "first": 0, "late": 0}  # the account settled
        due = [p for p in self._window if not p.assessment.verdict.flagged and p.due <= self.n_learned]
        for entry in due:
            entry.due = entry.arrived + REAUDIT_GROWTH * (entry.due - entry.arrived)
        self._due = due
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
        pending = [p for p in self._window if not p.assessment.verdict.flagged]
        return late + self._reaudit(pending, refit_thresholds=True, every=every)

    def _reaudit(self, pending: list[_Pending], *, refit_thresholds: bool, every: bool = False) -> list[LateVerdict]:
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
        assessments = self._hold_back(assessments, batch.vectors, batch.labels)
        if refit_thresholds:  # the final re-audit: cleanlab's find_label_issues decides, within what is left
            assessments = self._within_final_budget(assessments)
        else:
            assessments = self._within_budget(assessments, late=True)
        assessments = self._with_context(assessments, batch, [entry.arrived for entry in pending])
        for entry, assessment in zip(pending, assessments):
            if assessment.verdict.flagged:
                entry.assessment = assessment
                late.append(LateVerdict(entry.sample_id, entry.payload, assessment))
            elif every:
                late.append(LateVerdict(entry.sample_id, entry.payload, assessment))
        return late

    @staticmethod
    def _signals_of(entry: _Pending, row: int, rescored: Mapping[str, Sequence[Signal | None] | None]) -> dict:
        """The re-audit's signals for ``entry`` (row ``row``): each detector's new one (the first one where
        it cannot re-score, unflagged where it proved the row clean), and the evidence it first had."""
        signals = {name: (sigs[row] or _UNFLAGGED) if sigs is not None else entry.assessment.signals[name]
                   for name, sigs in rescored.items()}
        return {**signals, **{name: entry.assessment.signals[name] for name in EVIDENCE
                              if name in entry.assessment.signals}}

    def _flaggable(self, pending: list[_Pending], batch: Batch, rescored: dict) -> tuple[list[_Pending], Batch, dict]:
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


def _withdrawn(assessment: Assessment, **why) -> Assessment:
    """``assessment`` with its flag withdrawn: same score and signals, the reason in the verdict's details."""
    verdict = assessment.verdict
    return Assessment(Signal(verdict.score, False, None, {**verdict.details, **why}), assessment.signals)


def _batch_of(entries: Sequence[_Pending]) -> Batch:
    has_probas = any(p.user_proba for p in entries)
    return Batch(np.vstack([p.vector for p in entries]), [p.label for p in entries],
                 [p.user_proba for p in entries] if has_probas else None, [p.sample_id for p in entries])
