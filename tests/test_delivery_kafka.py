"""Output delivery against a real broker: failed sends are retried with backoff, and a batch whose
outputs cannot be delivered is never committed and never saved into the detector state."""

from __future__ import annotations

import os
import signal
import threading
import time

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from consumer.demo.broker import LocalBroker
from consumer.metrics import Metrics
from consumer.pipeline import InputRecord, Pipeline
from consumer.service import LabelwatchService
from consumer.sinks import DeliveryError
from consumer.settings import Settings
from consumer.sinks import KafkaSink
from consumer.state import StateStore
from consumer.export import read_topic
from detectors import MonitorConfig
from schemas import DeadLetter, SampleVerdict, SourcePosition

pytestmark = pytest.mark.kafka
MONITOR = MonitorConfig(n_clusters=3, cluster_window=128, neighbors_per_class=50, learning_step=20)


def messages(n: int, start: int = 0) -> list[dict]:
    return [{"sample_id": f"s{i}", "label": "ab"[i % 2], "embedding": [float(i % 2), 1.0, 0.5]}
            for i in range(start, start + n)]


def settings_for(bootstrap: str, **overrides) -> Settings:
    return Settings(bootstrap_servers=bootstrap, input_topic="in", review_topic="reviews", dlq_topic="dlq",
                    verdict_topic="verdicts", group_id="g", max_poll_interval_ms=10_000, session_timeout_ms=6_000,
                    heartbeat_interval_ms=2_000, metrics_port=0, **overrides)


def create(bootstrap: str, *topics: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, 1, 1) for t in topics])
    admin.close()


def test_outputs_that_fail_during_a_broker_stall_are_sent_again_until_delivered():
    with LocalBroker() as broker:
        bootstrap = broker.bootstrap_servers
        create(bootstrap, "reviews", "dlq", "verdicts")
        settings = settings_for(bootstrap, delivery_timeout_ms=1_000, delivery_attempts=8, delivery_backoff_ms=300)
        service = LabelwatchService(settings, Pipeline(MONITOR, None, metrics=Metrics()))
        producer = service._producer()  # nothing sent yet: its first requests meet the frozen broker
        sink = KafkaSink(settings, producer, service.metrics)
        records = [InputRecord(orjson.dumps(m), SourcePosition(topic="in", partition=0, offset=i))
                   for i, m in enumerate(messages(40))]
        result = service.pipeline.process(records)
        outcome: list = []
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            worker = threading.Thread(target=lambda: outcome.append(sink.deliver(result) or "delivered"))
            worker.start()
            time.sleep(4)  # several delivery timeouts pass while the broker is frozen
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        worker.join(timeout=60)
        producer.close()
        assert outcome == ["delivered"]
        retries = service.metrics.produce_retries.labels(topic="verdicts")._value.get()
        assert retries >= 40, "the first attempt cannot have succeeded while the broker was stopped"
        delivered = {SampleVerdict.model_validate_json(m.value).sample_id
                     for m in read_topic({"bootstrap_servers": bootstrap}, "verdicts", 40)}
        assert delivered == {m["sample_id"] for m in messages(40)}


def test_a_batch_that_cannot_be_delivered_is_neither_committed_nor_saved(kafka_broker, unique_name, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    names = {name: unique_name(name) for name in ("in", "reviews", "dlq", "verdicts")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, 1, 1) for t in names.values()])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    values = [orjson.dumps(m) for m in messages(60)]
    poison = b"{not json " + b"x" * 2_000  # its dead letter will be too large for the service's producer below
    values.insert(45, poison)
    acks = [producer.send(names["in"], value=v).get(timeout=10) for v in values]
    producer.close()
    assert acks[-1].offset == len(values) - 1

    def service(max_request_size: int | None) -> LabelwatchService:
        settings = Settings(**{**settings_for(bootstrap).model_dump(), "input_topic": names["in"],
                               "review_topic": names["reviews"], "dlq_topic": names["dlq"],
                               "verdict_topic": names["verdicts"], "group_id": names["in"], "max_poll_records": 15,
                               "checkpoint_interval_ms": 0, "delivery_attempts": 2, "delivery_backoff_ms": 10,
                               "state_dir": str(tmp_path)})
        built = LabelwatchService(settings, Pipeline(MONITOR, None, metrics=Metrics(), state=StateStore(tmp_path)))
        if max_request_size:  # a producer whose limit the poison's dead letter exceeds: a real, permanent failure
            make = built._producer
            built._producer = lambda: make(max_request_size=max_request_size)
        return built

    failing = service(max_request_size=1_500)
    with pytest.raises(DeliveryError, match="will be replayed"):
        failing.run()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=names["in"], enable_auto_commit=False)
    committed = consumer.committed(TopicPartition(names["in"], 0)) or 0
    consumer.close(autocommit=False)
    assert 0 < committed <= 45, "batches before the poison are committed, the poison's is not"
    saved = StateStore(tmp_path).load("default")
    assert saved.positions[(names["in"], 0)] <= 45, "the state never judged past what was delivered"
    assert saved.monitor.n_seen == saved.positions[(names["in"], 0)]

    healthy = service(max_request_size=None)
    worker = threading.Thread(target=healthy.run)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while healthy.stats.consumed + committed < len(values):
            assert time.monotonic() < deadline and worker.is_alive(), "the restarted service did not finish"
            time.sleep(0.2)
    finally:
        healthy.stop()
        worker.join(timeout=30)
    verdicts = [SampleVerdict.model_validate_json(m.value)
                for m in read_topic({"bootstrap_servers": bootstrap}, names["verdicts"], 60)]
    assert {v.sample_id for v in verdicts if not v.late} == {m["sample_id"] for m in messages(60)}
    letters = [DeadLetter.model_validate_json(m.value) for m in read_topic({"bootstrap_servers": bootstrap}, names["dlq"], 1)]
    assert [letter.original_bytes() for letter in letters] == [poison]
    assert StateStore(tmp_path).load("default").monitor.n_seen == 60, "every sample learned exactly once"


def test_the_service_outlives_its_broker_and_readiness_says_so():
    broker = LocalBroker().start()
    try:
        settings = settings_for(broker.bootstrap_servers, poll_timeout_ms=200)
        create(broker.bootstrap_servers, "in")
        service = LabelwatchService(settings, Pipeline(MONITOR, None, metrics=Metrics()))
        service.health.model_ready = True
        worker = threading.Thread(target=service.run)
        worker.start()
        assert service.assigned.wait(timeout=60), "never assigned"
        deadline = time.monotonic() + 10
        while not service.health.readiness()[0]:
            assert time.monotonic() < deadline, service.health.readiness()
            time.sleep(0.2)
        broker.stop()  # gone for good: connections refused
        deadline = time.monotonic() + 30
        while service.health.readiness()[1]["broker_reachable"]:
            assert time.monotonic() < deadline, "readiness never noticed the broker is gone"
            time.sleep(0.2)
        time.sleep(5)
        assert worker.is_alive(), "the consume loop died with its broker"
        alive, detail = service.health.liveness()
        assert alive and detail["seconds_since_last_poll"] < 3, "still polling, so still alive"
    finally:
        service.stop()
        worker.join(timeout=60)
        broker.stop()
    assert not worker.is_alive()
