"""Reviewers' answers (the corrections topic), applied to the detectors they concern."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from consumer.metrics import Metrics
from consumer.records import BatchResult, InputRecord, _describe, reject
from consumer.state import DatasetStates
from schemas import Correction


def apply_corrections(records: Sequence[InputRecord], states: DatasetStates, metrics: Metrics) -> BatchResult:
    """Apply each valid Correction to its dataset's monitor; invalid ones become dead letters."""
    result = BatchResult()
    for record in records:
        try:
            if record.value is None:
                raise ValueError("empty correction")
            correction = Correction.model_validate_json(record.value)
        except (ValidationError, ValueError) as error:
            reason = _describe(error) if isinstance(error, ValidationError) else str(error)
            result.dead_letters.append((record, reject(record, f"invalid correction: {reason}",
                                                       "invalid_correction", error)))
            metrics.samples_invalid.labels(reason="invalid_correction").inc()
            continue
        if correction.outcome == "skip":  # a reviewer passed: nothing to learn, the flag stays open for others
            metrics.corrections.labels(dataset=metrics.dataset_label(correction.dataset), outcome="skip",
                                       applied="skipped").inc()
            continue
        state = states.get(correction.dataset)
        done = state.monitor.correct(correction.sample_id, correction.outcome, correction.corrected_label)
        state.reviewed[correction.outcome] = state.reviewed.get(correction.outcome, 0) + 1
        states.touch(correction.dataset)
        label = metrics.dataset_label(correction.dataset)
        metrics.corrections.labels(dataset=label, outcome=correction.outcome, applied=done).inc()
        confirmed, false_alarms = state.reviewed.get("confirmed", 0), state.reviewed.get("false_alarm", 0)
        metrics.reviewer_precision.labels(dataset=label).set(confirmed / (confirmed + false_alarms))
        metrics.publish_error_rate(label, state.monitor.estimated_error_rate())
    return result
