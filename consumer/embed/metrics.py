"""Prometheus metrics of ``labelwatch embed``, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumer.metrics import _version


class EmbedMetrics:
    """What one embedder replica did: records read, samples forwarded, dead letters, model time."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        self.consumed = Counter("labelwatch_embed_records_consumed_total", "Raw annotation records read.", registry=r)
        self.forwarded = Counter(
            "labelwatch_embed_samples_forwarded_total",
            "Samples written to the internal topic: embedded here (text) or carrying the producer's vector already.",
            ["kind"], registry=r)
        self.invalid = Counter(
            "labelwatch_embed_samples_invalid_total", "Raw records sent to the dead-letter topic.", ["reason"],
            registry=r)
        self.embedding_seconds = Histogram(
            "labelwatch_embedding_seconds", "Time spent in one embedding-model call.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.batch_seconds = Histogram(
            "labelwatch_embed_batch_seconds", "Time to embed and deliver one poll, poll to commit.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.consumer_lag = Gauge(
            "labelwatch_consumer_lag", "Records behind the end of each input partition.", ["topic", "partition"],
            registry=r)
        self.poll_errors = Counter(
            "labelwatch_poll_errors_total", "Polls that failed because no broker answered (retried).", registry=r)
        self.commit_failures = Counter(
            "labelwatch_commit_failures_total",
            "Offset commits that failed: refused after a group rebalance (replayed), or unanswered (retried).", registry=r)
        Gauge("labelwatch_build_info", "Version of the running labelwatch.", ["version"],
              registry=r).labels(version=_version()).set(1)
