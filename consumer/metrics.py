"""Prometheus metrics of the service. No label value ever holds a sample or annotator id."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MAX_DATASET_LABELS = 20
"""Datasets beyond this many share the label value ``other``, so cardinality stays bounded."""


def _version() -> str:
    try:
        return version("labelwatch")
    except PackageNotFoundError:
        return "unknown"


class Metrics:
    """All labelwatch metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.samples_consumed = Counter(
            "labelwatch_samples_consumed_total", "Input records read.", registry=r)
        self.samples_processed = Counter(
            "labelwatch_samples_processed_total", "Valid samples judged by the detectors.", ["dataset"], registry=r)
        self.samples_invalid = Counter(
            "labelwatch_samples_invalid_total", "Input records sent to the dead-letter topic.", ["reason"], registry=r)
        self.review_events = Counter(
            "labelwatch_review_events_total", "Review events emitted.", ["dataset"], registry=r)
        self.review_events_deferred = Counter(
            "labelwatch_review_events_deferred_total", "Review events over the review budget, sent to the deferred topic.",
            registry=r)
        self.corrections = Counter(
            "labelwatch_corrections_total", "Reviewers' answers applied, by outcome and by what was done.",
            ["dataset", "outcome", "applied"], registry=r)
        self.flags_held_back = Counter(
            "labelwatch_flags_held_back_total",
            "Flags withdrawn because a reviewer called a similar sample a false alarm.", ["dataset"], registry=r)
        self.reviewer_precision = Gauge(
            "labelwatch_reviewer_confirmed_precision",
            "Share of reviewed flags that reviewers confirmed as wrong labels.", ["dataset"], registry=r)
        self.estimated_error_rate = Gauge(
            "labelwatch_estimated_error_rate",
            "Share of labels estimated wrong, corrected by reviewers' answers: what the flag budgets follow.",
            ["dataset"], registry=r)
        self.detector_flags = Counter(
            "labelwatch_detector_flags_total", "Review events each detector flagged.", ["detector"], registry=r)
        self.batch_seconds = Histogram(
            "labelwatch_batch_processing_seconds", "Time to process one micro-batch, poll to commit.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.reaudit_seconds = Histogram(
            "labelwatch_reaudit_slice_seconds", "Time to run one slice of deferred re-audits and deliver its results.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.reaudits_pending = Gauge(
            "labelwatch_reaudits_pending", "Deferred re-audits waiting to run, all datasets.", registry=r)
        self.record_latency = Histogram(
            "labelwatch_record_latency_seconds", "Time from a record's Kafka timestamp to its commit.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r)
        self.embedding_seconds = Histogram(
            "labelwatch_embedding_seconds", "Time spent in one embedding-model call.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.clusters = Gauge(
            "labelwatch_clusters", "Clusters that hold at least one recent sample.", ["dataset"], registry=r)
        self.cluster_purity = Gauge(
            "labelwatch_cluster_purity",
            "Share of recent samples whose label is their cluster's majority label (1 = no mixed clusters).",
            ["dataset"], registry=r)
        self.consumer_lag = Gauge(
            "labelwatch_consumer_lag", "Records behind the end of each input partition.",
            ["topic", "partition"], registry=r)
        self.offset_resets = Counter(
            "labelwatch_offset_resets_total",
            "Saved offsets found void (the topic was created again, or its log ends before them): records judged anew.",
            registry=r)
        self.samples_replayed = Counter(
            "labelwatch_samples_replayed_total",
            "Records replayed after a restart that the restored state had already judged (skipped).", registry=r)
        self.produce_retries = Counter(
            "labelwatch_produce_retries_total", "Output records sent again after a failed delivery.", ["topic"],
            registry=r)
        self.label_drift = Counter(
            "labelwatch_label_drift_total", "Shifts in the share of a label in the stream (ADWIN).", ["dataset"],
            registry=r)
        self.cluster_drift = Counter(
            "labelwatch_cluster_drift_total", "Shifts in the share of samples a cluster receives (ADWIN).",
            ["dataset"], registry=r)
        self.annotator_disagreements = Counter(
            "labelwatch_annotator_disagreements_total",
            "Annotations of a sample that several annotators labelled differently.", ["dataset"], registry=r)
        self.annotator_shifts = Counter(
            "labelwatch_annotator_shifts_total", "Annotators whose disagreement rate rose (ADWIN).", ["dataset"],
            registry=r)
        self.annotator_error_rate = Gauge(
            "labelwatch_annotator_error_rate",
            "Estimated error rate of the worst annotators (top N only, opt-in: annotator_metrics_top).",
            ["dataset", "annotator"], registry=r)
        self.poll_errors = Counter(
            "labelwatch_poll_errors_total", "Polls that failed because no broker answered (retried).", registry=r)
        self.commit_failures = Counter(
            "labelwatch_commit_failures_total",
            "Offset commits that failed: refused after a group rebalance (replayed), or unanswered (retried).", registry=r)
        self.records_handed_back = Counter(
            "labelwatch_records_handed_back_total",
            "Polled records left for the next poll because the poll's time budget was spent (a slow or busy machine).",
            registry=r)
        self.build_info = Gauge(
            "labelwatch_build_info", "Version of the running labelwatch.", ["version"], registry=r)
        self.build_info.labels(version=_version()).set(1)
        self._datasets: set[str] = set()

    def publish_error_rate(self, label: str, rate: float | None) -> None:
        """The estimated error rate of a dataset's label value; nothing while there is no estimate."""
        if rate is not None:
            self.estimated_error_rate.labels(dataset=label).set(rate)

    def dataset_label(self, dataset: str) -> str:
        """The label value for ``dataset``: itself for the first datasets seen, then ``other``."""
        if dataset in self._datasets:
            return dataset
        if len(self._datasets) < MAX_DATASET_LABELS:
            self._datasets.add(dataset)
            return dataset
        return "other"
