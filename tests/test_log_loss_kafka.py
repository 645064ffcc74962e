"""A broker that lost its log: offsets start again at 0, below the positions the checkpoint saved.

Skipping by those positions would drop every new record without a trace. The service must see that
the saved positions belong to another log (the topic's id changed, or the log ends before them),
judge the new records, keep what it learned, and say so in a log line and a metric.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumer.demo.broker import LocalBroker, free_port
from consumer.metrics import Metrics
from consumer.pipeline import Pipeline
from consumer.service import LabelwatchService
from consumer.settings import Settings
from consumer.state import StateStore
from consumer.demo.topics import ensure_topics
from detectors import MonitorConfig
from schemas import SampleVerdict

pytestmark = pytest.mark.kafka

CONFIG = MonitorConfig(n_clusters=3, cluster_window=256, neighbors_per_class=100, learning_step=100)
TOPICS = {"input_topic": "in", "review_topic": "reviews", "dlq_topic": "dlq", "verdict_topic": "verdicts"}


def produce(bootstrap: str, prefix: str, n: int) -> set[str]:
    ensure_topics(Settings(bootstrap_servers=bootstrap), list(TOPICS.values()))  # one partition each
    rng = np.random.default_rng(len(prefix) + n)
    centers = np.eye(3) * 4.0
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i in range(n):
        which = int(rng.integers(0, 3))
        message = {"sample_id": f"{prefix}{i}", "label": "abc"[which],
                   "embedding": (centers[which] + rng.normal(size=3)).round(4).tolist()}
        producer.send("in", key=b"default", value=orjson.dumps(message))
    producer.flush()
    producer.close()
    return {f"{prefix}{i}" for i in range(n)}


def judge_until(bootstrap: str, state_dir, expected: set[str]) -> tuple[set[str], Metrics]:
    """Run the service until every expected sample has a verdict; returns the ids judged and the metrics."""
    settings = Settings(bootstrap_servers=bootstrap, group_id="labelwatch", state_dir=str(state_dir), metrics_port=0,
                        max_poll_interval_ms=10_000, session_timeout_ms=6_000, heartbeat_interval_ms=2_000,
                        **TOPICS)
    metrics = Metrics()
    service = LabelwatchService(settings, Pipeline(CONFIG, None, metrics=metrics, state=StateStore(state_dir)))
    worker = threading.Thread(target=service.run)
    worker.start()
    verdicts = KafkaConsumer("verdicts", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    judged: set[str] = set()
    try:
        deadline = time.monotonic() + 90
        while not expected <= judged and time.monotonic() < deadline and worker.is_alive():
            for records in verdicts.poll(timeout_ms=500).values():
                judged.update(SampleVerdict.model_validate_json(r.value).sample_id for r in records)
    finally:
        verdicts.close()
        service.stop()
        worker.join()
    return judged, metrics


@pytest.mark.parametrize("new_records", [300, 700], ids=["fewer-than-before", "more-than-before"])
def test_after_the_broker_lost_its_log_every_new_record_is_judged(tmp_path, new_records):
    # 300 new records end the log before the saved position (600); 700 pass it, so only the topic's
    # new id tells the two logs apart
    port, state_dir = free_port(), tmp_path / "state"
    with LocalBroker(port=port) as broker:
        first = produce(broker.bootstrap_servers, "old-", 600)
        judged, _ = judge_until(broker.bootstrap_servers, state_dir, first)
        assert first <= judged
    assert StateStore(state_dir).load("default").positions == {("in", 0): 600}

    with LocalBroker(port=port) as broker:  # the same address, a fresh memory-only broker: log and offsets gone
        fresh = produce(broker.bootstrap_servers, "new-", new_records)
        judged, metrics = judge_until(broker.bootstrap_servers, state_dir, fresh)

    assert fresh <= judged, f"{len(fresh - judged)} of {new_records} new records were never judged"
    assert metrics.offset_resets._value.get() >= 1
    state = StateStore(state_dir).load("default")
    assert state.monitor.n_seen == 600 + new_records, "the learned state was kept and went on"
    assert state.positions == {("in", 0): new_records}
