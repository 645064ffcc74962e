"""A flaky network between labelwatch and its broker: connections reset, then traffic black-holed.

Every connection goes through a loopback TCP proxy (``tcp_proxy.py``): the broker advertises the
proxy's port as its listener, so clients reconnect through it too. Nothing may be lost.
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from consumer.demo.broker import LocalBroker, free_port
from consumer.export import read_topic
from kafka_helpers import committed, output_of, start_service, wait_committed
from schemas import DeadLetter, SampleVerdict
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.kafka

MALFORMED = [b"not json", b'{"sample_id": "x"}', b'{"label": "1"}', b"", b'{"sample_id": "y", "label": "2", "embedding": []}']


def _messages(start: int, stop: int) -> list[dict]:
    rng = np.random.default_rng(start)
    centers = np.random.default_rng(0).normal(size=(5, 16)) * 3
    which = rng.integers(0, 5, stop - start)
    vectors = centers[which] + rng.normal(size=(stop - start, 16))
    return [{"sample_id": f"n{start + i}", "label": str(which[i]), "embedding": [round(float(v), 4) for v in vectors[i]]}
            for i in range(stop - start)]


def _produce(bootstrap: str, values: list[bytes], keys: list[bytes | None]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", retries=20,
                             retry_backoff_ms=500, request_timeout_ms=10_000)
    try:
        for key, value in zip(keys, values):
            producer.send("in", key=key, value=value)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)


def _produce_samples(bootstrap: str, start: int, stop: int) -> None:
    messages = _messages(start, stop)
    _produce(bootstrap, [orjson.dumps(m) for m in messages], [m["sample_id"].encode() for m in messages])


def test_resets_and_a_30_second_black_hole_lose_nothing(tmp_path):
    broker_port = free_port()
    with TcpProxy(broker_port) as proxy, LocalBroker(port=broker_port, advertised_port=proxy.port):
        bootstrap, partitions = f"127.0.0.1:{proxy.port}", 2
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("in", partitions, 1), NewTopic("reviews", 1, 1), NewTopic("dlq", 1, 1),
                             NewTopic("verdicts", 1, 1)])
        admin.close()
        _produce_samples(bootstrap, 0, 2000)

        service = start_service(bootstrap, tmp_path)
        try:
            wait_committed(service, bootstrap, 1000, partitions=partitions, timeout=90)
            # six resets, 3 s apart, while more annotations arrive
            for burst in range(6):
                cut = proxy.reset()
                assert cut or burst, "the service's connections went through the proxy"
                _produce_samples(bootstrap, 2000 + burst * 400, 2400 + burst * 400)
                time.sleep(3)
            # the last samples and five malformed messages, then at once the black hole: the
            # service is still judging and delivering them, and its checkpoint commits into it
            _produce_samples(bootstrap, 4400, 5000)
            _produce(bootstrap, MALFORMED, [None] * len(MALFORMED))
            proxy.black_hole()
            time.sleep(30)
            proxy.restore()
            n, total = 5000, 5000 + len(MALFORMED)
            deadline = time.monotonic() + 240
            while committed(bootstrap, "g", "in", partitions) < total:
                assert service.poll() is None, "the service died:\n" + output_of(service)[-4000:]
                assert time.monotonic() < deadline, "the service did not catch up within 240 s of the black hole"
                time.sleep(1)
            service.send_signal(signal.SIGTERM)
            assert service.wait(timeout=60) == 0
        finally:
            if service.poll() is None:
                service.kill()
                service.wait()

        verdicts = [SampleVerdict.model_validate_json(m.value)
                    for m in read_topic({"bootstrap_servers": bootstrap}, "verdicts", n, timeout=60)]
        first: dict[str, set[str]] = {}
        for verdict in verdicts:
            if not verdict.late:
                first.setdefault(verdict.sample_id, set()).add(verdict.event_id)
        assert len(first) == n, f"{n - len(first)} of {n} samples have no verdict"
        assert all(len(ids) == 1 for ids in first.values()), "a replayed verdict changed its id"
        letters = [DeadLetter.model_validate_json(m.value)
                   for m in read_topic({"bootstrap_servers": bootstrap}, "dlq", len(MALFORMED), timeout=30)]
        positions = {(letter.source.partition, letter.source.offset) for letter in letters}
        assert len(positions) == len(MALFORMED), f"dead letters for {len(positions)} of {len(MALFORMED)} malformed"


def test_a_commit_into_a_black_hole_is_retried_later_not_fatal(tmp_path):
    # the service saved its state and delivered its outputs, then the network went dark just as it
    # committed: the commit times out; that must cost a replay (skipped by the saved positions), not a crash
    from consumer.app import build_service, open_state
    from consumer.settings import Settings
    from consumer.state import StateStore

    broker_port = free_port()
    with TcpProxy(broker_port) as proxy, LocalBroker(port=broker_port, advertised_port=proxy.port):
        bootstrap = f"127.0.0.1:{proxy.port}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(t, 1, 1) for t in ("in", "reviews", "dlq")])
        admin.close()
        _produce_samples(bootstrap, 0, 300)
        settings = Settings(bootstrap_servers=bootstrap, input_topic="in", review_topic="reviews", dlq_topic="dlq",
                            group_id="g-dark", metrics_port=0, state_dir=str(tmp_path), embedding_preload=False,
                            checkpoint_interval_ms=3_600_000, max_poll_interval_ms=10_000, session_timeout_ms=6_000,
                            heartbeat_interval_ms=2_000)
        app = build_service(settings, state=open_state(settings), embedder=None)
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                app.service.run()
                outcome.append(None)
            except BaseException as error:  # surfaced below
                outcome.append(error)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while app.service.stats.consumed < 300:
            assert thread.is_alive() and time.monotonic() < deadline, "the service did not consume the 300 records"
            time.sleep(0.2)
        proxy.black_hole()
        app.service.stop()  # its last checkpoint saves the state, then commits into the black hole
        thread.join(timeout=180)
        proxy.restore()
        assert not thread.is_alive(), "the service hung on the dark network"
        assert outcome == [None], f"the service failed: {outcome}"
        assert app.metrics.commit_failures._value.get() == 1
        assert committed(bootstrap, "g-dark", "in", 1) == 0, "nothing could be committed"

        again = build_service(settings, state=open_state(settings), embedder=None)
        thread = threading.Thread(target=again.service.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while again.metrics.samples_replayed._value.get() < 300:
            assert time.monotonic() < deadline, "the replay of the uncommitted records was not skipped"
            time.sleep(0.2)
        again.service.stop()
        thread.join(timeout=60)
        assert StateStore(tmp_path).load("default").monitor.n_seen == 300, "every sample judged once, none twice"
