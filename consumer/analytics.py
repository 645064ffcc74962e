"""What the service learns about a dataset from its verdicts, beside the verdicts themselves:
label and cluster drift, annotator quality, and agreement between annotators of the same sample.

Metrics and log events, and one piece of evidence: a label against the consensus of several
annotators becomes a ``consensus`` signal, which the monitor combines with the detectors' like any
voter (so the policy, the false-alarm hold-back and the flag budget apply to it too).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from consumer.metrics import Metrics
from consumer.records import Payload
from consumer.state import DatasetState
from detectors import Assessment, LateVerdict, Signal
from schemas import AnnotatedSample

log = logging.getLogger("consumer.pipeline")


class Analytics:
    """Drift, annotator and consensus bookkeeping of each judged batch, in the dataset's state."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def consensus(self, dataset: str, state: DatasetState, samples: Sequence[AnnotatedSample]) -> list[Signal | None]:
        """The ``consensus`` evidence of each sample, before it is judged: a flagging signal when
        several annotators labelled it and their (reliability-weighted) consensus is another label;
        ``None`` otherwise. The monitor combines it with the detectors' signals like any voter."""
        return [self._consensus_of(dataset, state, sample) for sample in samples]

    def after_batch(self, dataset: str, state: DatasetState, samples: Sequence[AnnotatedSample],
                    assessments: Sequence[Assessment]) -> None:
        """Watch drift and judge annotators by the batch's verdicts."""
        self._watch_drift(dataset, state, samples, assessments)
        for sample, assessment in zip(samples, assessments):
            self._judge_annotator(dataset, state, sample, assessment)

    @staticmethod
    def after_late(state: DatasetState, late: Sequence[LateVerdict[Payload]]) -> None:
        """A sample flagged late counts against its annotator too."""
        for verdict in late:
            sample = verdict.payload[0]
            if verdict.assessment.verdict.flagged and sample.annotator_id:
                state.annotators.flag_later(sample.annotator_id)

    def _watch_drift(self, dataset: str, state: DatasetState, samples, assessments) -> None:
        """Label mix and cluster occupancy over time: each shift is a metric and a log event."""
        label = self.metrics.dataset_label(dataset)
        watched = ((state.label_drift, [s.label for s in samples], self.metrics.label_drift, "label"),
                   (state.cluster_drift, [a.cluster_id for a in assessments if a.cluster_id is not None],
                    self.metrics.cluster_drift, "cluster"))
        for drift, categories, counter, kind in watched:
            for shift in drift.update(categories):
                counter.labels(dataset=label).inc()
                log.info("the share of %s %r in dataset %r moved from %.3f to %.3f", kind, shift.category, dataset,
                         shift.before, shift.after,
                         extra={"event": f"{kind}_drift", "dataset": dataset, kind: shift.category,
                                "share_before": shift.before, "share_after": shift.after})

    def _consensus_of(self, dataset: str, state: DatasetState, sample: AnnotatedSample) -> Signal | None:
        agreed = state.consensus.add(sample.sample_id, sample.annotator_id, sample.label,
                                     reliability=lambda annotator: 1.0 - state.annotators.error_rate(annotator))
        if agreed is None or agreed.unanimous:
            return None
        self.metrics.annotator_disagreements.labels(dataset=self.metrics.dataset_label(dataset)).inc()
        if agreed.label == sample.label:
            return None
        backing = sum(label == sample.label for label in agreed.annotations.values()) / len(agreed.annotations)
        return Signal(round(1.0 - backing, 6), True, agreed.label,
                      {"consensus": agreed.label, "agreement": round(agreed.agreement, 4),
                       "annotations": agreed.annotations})

    def _judge_annotator(self, dataset: str, state: DatasetState, sample: AnnotatedSample,
                         assessment: Assessment) -> None:
        if not sample.annotator_id:
            return
        disagrees = assessment.disagrees
        if disagrees is None:
            return
        shift = state.annotators.update(sample.annotator_id, disagrees=disagrees,
                                        flagged=assessment.verdict.flagged)
        if shift is not None and shift.worse:
            self.metrics.annotator_shifts.labels(dataset=self.metrics.dataset_label(dataset)).inc()
            log.warning("annotator %r of dataset %r: disagreement rate rose from %.3f to %.3f after %d samples",
                        shift.annotator_id, dataset, shift.rate_before, shift.rate_after, shift.n,
                        extra={"event": "annotator_shift", "dataset": dataset, "annotator_id": shift.annotator_id,
                               "rate_before": shift.rate_before, "rate_after": shift.rate_after})
