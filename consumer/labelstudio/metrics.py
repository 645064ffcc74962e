"""Prometheus metrics of the Label Studio bridge."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        self.annotations = Counter("labelwatch_label_studio_annotations_total",
                                   "Annotation versions sent to the input topic.", registry=r)
        self.tasks = Counter("labelwatch_label_studio_review_tasks_total", "Review tasks made in the review project.",
                             registry=r)
        self.answers = Counter("labelwatch_label_studio_answers_total",
                               "Reviewers' answers sent to the corrections topic, by outcome.", ["outcome"], registry=r)
        self.dead_letters = Counter("labelwatch_label_studio_dead_letters_total",
                                    "Payloads that could not be read, sent to the dead-letter topic.", registry=r)
        self.predictions_repaired = Counter(
            "labelwatch_label_studio_predictions_repaired_total",
            "Review tasks whose prediction Label Studio dropped at import, given it again.", registry=r)
        self.duplicate_tasks_deleted = Counter(
            "labelwatch_label_studio_duplicate_tasks_deleted_total",
            "Review tasks made twice for one review event (an import that failed after Label Studio saved it), "
            "deleted.", registry=r)
        self.label_studio_errors = Counter("labelwatch_label_studio_errors_total",
                                           "Calls to Label Studio that failed (retried at the next reconcile).",
                                           registry=r)
