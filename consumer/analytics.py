"""What the service learns about a dataset from its verdicts, beside the verdicts themselves:
label and cluster drift, annotator quality, and agreement between annotators of the same sample.

Metrics and log events only; :class:`Analytics` never changes a verdict, except that a label
against the consensus of several annotators becomes a ``consensus`` reason of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from consumer.metrics import Metrics
from consumer.state import DatasetState
from detectors import Assessment, LateVerdict, Signal
from schemas import AnnotatedSample

log = logging.getLogger("consumer.pipeline")


class Analytics:
    """Drift, annotator and consensus bookkeeping of each judged batch, in the dataset's state."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def after_batch(self, dataset: str, state: DatasetState, samples: Sequence[AnnotatedSample],
                    assessments: Sequence[Assessment]) -> list[Assessment]:
        """Watch drift, judge annotators, and add consensus evidence; returns the assessments to record."""
        self._watch_drift(dataset, state, samples, assessments)
        recorded = []
        for sample, assessment in zip(samples, assessments):
            self._judge_annotator(dataset, state, sample, assessment)
            recorded.append(self._with_consensus(dataset, state, sample, assessment))
        return recorded

    @staticmethod
    def after_late(state: DatasetState, late: Sequence[LateVerdict]) -> None:
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

    def _with_consensus(self, dataset: str, state: DatasetState, sample: AnnotatedSample,
                        assessment: Assessment) -> Assessment:
        """Several annotators labelled this sample: a label against their consensus is a review reason."""
        agreed = state.consensus.add(sample.sample_id, sample.annotator_id, sample.label,
                                     reliability=lambda annotator: 1.0 - state.annotators.error_rate(annotator))
        if agreed is None or agreed.unanimous:
            return assessment
        self.metrics.annotator_disagreements.labels(dataset=self.metrics.dataset_label(dataset)).inc()
        if agreed.label == sample.label:
            return assessment
        backing = sum(label == sample.label for label in agreed.annotations.values()) / len(agreed.annotations)
        signal = Signal(round(1.0 - backing, 6), True, agreed.label,
                        {"consensus": agreed.label, "agreement": round(agreed.agreement, 4),
                         "annotations": agreed.annotations})
        verdict = assessment.verdict
        combined = Signal(max(verdict.score, signal.score), True, verdict.suggested_label or agreed.label,
                          {**verdict.details, "consensus": agreed.label})
        return Assessment(combined, {**assessment.signals, "consensus": signal})

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
