"""Faults against a real broker: bounded, self-stopping, and nothing may be lost."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from consumer.demo.broker import LocalBroker
from consumer.export import read_topic
from schemas import SampleVerdict
from kafka_helpers import committed, output_of, start_service, wait_committed

pytestmark = pytest.mark.kafka


def _messages(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, 16)) * 3
    which = rng.integers(0, 5, n)
    vectors = centers[which] + rng.normal(size=(n, 16))
    return [{"sample_id": f"f{i}", "label": str(which[i]), "embedding": [round(float(v), 4) for v in vectors[i]]}
            for i in range(n)]


def test_a_15_second_broker_stall_loses_nothing_and_needs_no_restart(tmp_path):
    with LocalBroker() as broker:
        bootstrap, n, partitions = broker.bootstrap_servers, 6000, 2
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("in", partitions, 1), NewTopic("reviews", 1, 1), NewTopic("dlq", 1, 1),
                             NewTopic("verdicts", 1, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        for message in _messages(n):
            producer.send("in", key=message["sample_id"].encode(), value=orjson.dumps(message))
        producer.flush()
        producer.close()

        service = start_service(bootstrap, tmp_path)
        try:
            wait_committed(service, bootstrap, 1000, partitions=partitions, timeout=60)
            os.kill(broker.process.pid, signal.SIGSTOP)
            time.sleep(15)
            os.kill(broker.process.pid, signal.SIGCONT)
            deadline = time.monotonic() + 180
            while committed(bootstrap, "g", "in", partitions) < n:
                assert service.poll() is None, "the service died during the stall:\n" + output_of(service)
                assert time.monotonic() < deadline, "the service did not recover within 180 s after the stall"
                time.sleep(1)
            service.send_signal(signal.SIGTERM)
            assert service.wait(timeout=30) == 0
        finally:
            if broker.process.poll() is None:
                os.kill(broker.process.pid, signal.SIGCONT)
            if service.poll() is None:
                service.kill()
                service.wait()

        verdicts = [SampleVerdict.model_validate_json(m.value) for m in read_topic({"bootstrap_servers": bootstrap}, "verdicts", n, timeout=60)]
        first = {}
        for verdict in verdicts:
            if not verdict.late:
                first.setdefault(verdict.sample_id, set()).add(verdict.event_id)
        assert len(first) == n, f"{n - len(first)} samples have no verdict"
        assert all(len(ids) == 1 for ids in first.values()), "a replayed verdict changed its id"
