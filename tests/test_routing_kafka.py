"""Review routing, the review budget and the export, through the real service and broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from consumer.demo.datasets import inject_noise, load, to_messages
from consumer.routing import parse_routes
from consumer.export import read_topic
from schemas import ReviewEvent, SampleVerdict

pytestmark = pytest.mark.kafka


def test_routes_and_budget_send_the_most_urgent_for_review_and_defer_the_rest(kafka_broker, unique_name, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    names = {n: unique_name(n) for n in ("in", "reviews", "urgent", "deferred", "dlq", "verdicts")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, 1, 1) for t in names.values()])
    admin.close()
    data = load("digits")
    noisy, _ = inject_noise(data.labels, 0.1, n_classes=10, seed=5)
    messages = to_messages(data, noisy, order_seed=5)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for m in messages:
        producer.send(names["in"], key=b"digits", value=orjson.dumps(m))
    producer.flush()
    producer.close()

    budget = 40
    env = {**os.environ, "LABELWATCH_EMBEDDING_PRELOAD": "false", "LABELWATCH_SESSION_TIMEOUT_MS": "6000",
           "LABELWATCH_HEARTBEAT_INTERVAL_MS": "2000", "LABELWATCH_MAX_POLL_INTERVAL_MS": "10000"}
    service = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run", "--bootstrap-servers", bootstrap, "--input-topic", names["in"],
         "--review-topic", names["reviews"], "--dlq-topic", names["dlq"], "--verdict-topic", names["verdicts"],
         "--group-id", names["in"], "--metrics-port", "0", "--review-routes", f"priority:1={names['urgent']}",
         "--review-budget", str(budget), "--review-deferred-topic", names["deferred"]],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=names["in"], enable_auto_commit=False)
        deadline = time.monotonic() + 120
        while (consumer.committed(TopicPartition(names["in"], 0)) or 0) < len(messages):
            assert service.poll() is None and time.monotonic() < deadline, "the service did not finish"
            time.sleep(0.5)
        consumer.close(autocommit=False)
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    finally:
        if service.poll() is None:
            service.kill()

    config = {"bootstrap_servers": bootstrap}
    verdicts = [SampleVerdict.model_validate_json(m.value) for m in read_topic(config, names["verdicts"], len(messages))]
    flagged = {v.event_id for v in verdicts if v.flagged}
    topics = {name: [ReviewEvent.model_validate_json(m.value) for m in read_topic(config, names[name], 1, timeout=8)]
              for name in ("reviews", "urgent", "deferred")}
    assert all(e.priority == 1 for e in topics["urgent"]), "the route sends priority 1 to its own topic"
    assert all(e.priority != 1 for e in topics["reviews"])
    sent = len(topics["urgent"]) + len(topics["reviews"])
    assert sent == budget, f"the budget admits {budget} events per window, {sent} were sent"
    assert topics["deferred"], "the rest wait on the deferred topic"
    every = {e.event_id for events in topics.values() for e in events}
    assert every == flagged, "nothing is dropped: every flagged verdict is on exactly one of the three topics"

    out = tmp_path / "tasks.json"
    done = subprocess.run([sys.executable, "-m", "consumer", "export", "--topic", names["deferred"],
                           "--bootstrap-servers", bootstrap, "--format", "labelstudio", "--out", str(out),
                           "--timeout", "5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tasks = json.loads(out.read_text())
    assert len(tasks) == len({e.event_id for e in topics["deferred"]})
    assert [t["meta"]["priority"] for t in tasks] == sorted(t["meta"]["priority"] for t in tasks)
    assert all(t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks)


def test_routes_reject_a_malformed_rule():
    with pytest.raises(ValueError, match="priority:N=TOPIC"):
        parse_routes("urgent")


def test_corrections_from_the_corrections_topic_hold_back_similar_flags(kafka_broker, unique_name):
    import threading

    from consumer.metrics import Metrics
    from consumer.pipeline import Pipeline
    from consumer.service import LabelwatchService
    from consumer.settings import Settings
    from detectors import MonitorConfig
    from test_corrections import stream

    from kafka_helpers import fresh_topics

    bootstrap = kafka_broker.bootstrap_servers
    names = fresh_topics(bootstrap, unique_name, "in", "corrections", "reviews", "dlq")
    messages, wrong = stream(1500, seed=4)
    settings = Settings(bootstrap_servers=bootstrap, input_topic=names["in"], corrections_topic=names["corrections"],
                        review_topic=names["reviews"], dlq_topic=names["dlq"], group_id=names["in"],
                        max_poll_interval_ms=10_000, session_timeout_ms=6_000, heartbeat_interval_ms=2_000,
                        metrics_port=0, max_poll_records=100)
    service = LabelwatchService(settings, Pipeline(MonitorConfig(detectors=("cluster", "neighbors", "confident")),
                                                   None, metrics=Metrics()))
    worker = threading.Thread(target=service.run)
    worker.start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    reviews = KafkaConsumer(names["reviews"], bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                            consumer_timeout_ms=500)
    try:
        for m in messages:
            producer.send(names["in"], key=b"default", value=orjson.dumps(m))
        producer.flush()
        answered, deadline = 0, time.monotonic() + 120
        while service.stats.consumed < len(messages) or service.stats.corrections < answered:
            assert worker.is_alive() and time.monotonic() < deadline, "the service did not finish"
            for record in reviews:  # a reviewer answers every review event as it arrives
                event = ReviewEvent.model_validate_json(record.value)
                answer = ({"sample_id": event.sample_id, "outcome": "confirmed", "corrected_label": "a"}
                          if event.sample_id in wrong else {"sample_id": event.sample_id, "outcome": "false_alarm"})
                producer.send(names["corrections"], value=orjson.dumps(answer))
                answered += 1
            producer.flush()
    finally:
        service.stop()
        worker.join(timeout=60)
        producer.close()
        reviews.close()
    assert answered > 0 and service.stats.corrections == answered
    metrics = service.metrics
    false_alarms = metrics.corrections.labels(dataset="default", outcome="false_alarm", applied="false_alarm")._value.get()
    assert false_alarms > 0
    precision = metrics.reviewer_precision.labels(dataset="default")._value.get()
    assert 0 < precision < 1
    held_back = sum(len(state.monitor.false_alarms) for state in service.pipeline.datasets.values()) if \
        service.pipeline.datasets else 0
    assert held_back == false_alarms, "every false alarm answered is remembered"
