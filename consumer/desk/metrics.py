"""Prometheus metrics of the review desk. Reviewer ids come from the reviewers file, so their number is bounded."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from consumer.desk.queue import ReviewQueue


class DeskMetrics:
    """The desk's metrics, in a registry of their own; :meth:`observe` refreshes the queue gauges."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        self.answers = Counter(
            "labelwatch_reviewer_answers_total", "Answers given at the review desk, by reviewer and outcome.",
            ["dataset", "reviewer", "outcome"], registry=r)
        self.open_items = Gauge("labelwatch_review_queue_open", "Open review events at the desk.", ["dataset"],
                                registry=r)
        self.answered_today = Gauge("labelwatch_review_queue_answered_today",
                                    "Events answered today (UTC), by every desk replica.", ["dataset"], registry=r)
        self.invalid_records = Counter(
            "labelwatch_review_desk_invalid_records_total", "Records the desk could not read (left in their topic).",
            ["topic"], registry=r)
        self.delivery_failures = Counter(
            "labelwatch_review_desk_delivery_failures_total", "Answers or leases the broker did not acknowledge.",
            ["topic"], registry=r)
        self.lost_claims = Counter(
            "labelwatch_review_desk_lost_claims_total", "Leases another reviewer claimed first.", registry=r)

    def observe(self, queue: ReviewQueue) -> None:
        for dataset, row in queue.progress().items():
            self.open_items.labels(dataset=dataset).set(row.open)
            self.answered_today.labels(dataset=dataset).set(row.answered_today)
