"""A slow poll never outlasts the group's poll interval: the service sizes its polls by time.

The embedder here stands in for a text model on a machine that slows down mid-stream: each text
costs a fixed time, five times more after the first 120. Without pacing, one poll of 500 texts
would take ten seconds against a three-second ``max_poll_interval_ms``: the group would evict the
consumer, its commit would fail and the batch would be replayed.
"""

from __future__ import annotations

import threading
import time
import zlib

import numpy as np
import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumer.metrics import Metrics
from consumer.pipeline import Pipeline
from consumer.service import LabelwatchService
from consumer.settings import Settings
from detectors import MonitorConfig
from kafka_helpers import fresh_topics
from schemas import SampleVerdict

pytestmark = pytest.mark.kafka

N_TEXTS = 300


class SlowingEmbedder:
    """Deterministic vectors from each text's checksum; ``seconds`` per text, ``slowdown`` times more after ``fast``."""

    def __init__(self, seconds: float, *, fast: int, slowdown: float):
        self.seconds, self.fast, self.slowdown = seconds, fast, slowdown
        self.embedded = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        for _ in texts:
            self.embedded += 1
            time.sleep(self.seconds * (1 if self.embedded <= self.fast else self.slowdown))
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]).astype(np.float32)


def test_slow_polls_are_cut_to_the_time_budget_and_nothing_is_judged_twice(kafka_broker, unique_name):
    bootstrap = kafka_broker.bootstrap_servers
    names = fresh_topics(bootstrap, unique_name, "in", "reviews", "dlq", "verdicts")
    settings = Settings(bootstrap_servers=bootstrap, input_topic=names["in"], review_topic=names["reviews"],
                        dlq_topic=names["dlq"], verdict_topic=names["verdicts"], group_id=names["in"],
                        max_poll_interval_ms=3_000, session_timeout_ms=6_000, heartbeat_interval_ms=1_000,
                        metrics_port=0)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i in range(N_TEXTS):
        producer.send(names["in"], value=orjson.dumps({"sample_id": f"t{i}", "label": "ab"[i % 2], "text": f"text {i}"}))
    producer.flush()
    producer.close()

    service = LabelwatchService(settings, Pipeline(MonitorConfig(),
                                                   SlowingEmbedder(0.01, fast=120, slowdown=5.0), metrics=Metrics()))
    worker = threading.Thread(target=service.run)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while service.stats.processed < N_TEXTS:
            assert worker.is_alive() and time.monotonic() < deadline, "the service did not finish"
            time.sleep(0.2)
    finally:
        service.stop()
        worker.join()

    verdicts = KafkaConsumer(names["verdicts"], bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=2000)
    first = [v.sample_id for v in (SampleVerdict.model_validate_json(r.value) for r in verdicts) if not v.late]
    verdicts.close()
    assert sorted(first) == sorted(f"t{i}" for i in range(N_TEXTS)), "every text judged exactly once"
    metrics = service.metrics
    assert metrics.commit_failures._value.get() == 0, "the group never evicted the consumer"
    assert metrics.records_handed_back._value.get() > 0, "the slowdown cut a poll short"
    assert service.pacer.poll_records() < 500, "polls were sized to the time budget"
    buckets = {s.labels["le"]: s.value for s in metrics.batch_seconds.collect()[0].samples if s.name.endswith("_bucket")}
    assert buckets["2.5"] == buckets["+Inf"], "every poll's work ended well inside the 3 s poll interval"
