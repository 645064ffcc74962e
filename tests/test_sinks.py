"""Output sinks: the file sink writes what ``labelwatch audit`` always wrote; the Kafka sink routes,
budgets and dead-letters, for every batch and for the final re-audit of ``flush_on_stop``."""

from __future__ import annotations

import io
import threading
import time
from itertools import islice

import orjson
import pytest
from kafka import KafkaProducer

from consumer.audit import audit_file
from consumer.demo.datasets import inject_noise, load, to_messages
from consumer.export import read_topic
from consumer.metrics import Metrics
from consumer.pipeline import InputRecord, Pipeline
from consumer.records import BatchResult, reject
from consumer.service import LabelwatchService
from consumer.settings import Settings
from consumer.sinks import ERROR_HEADER_PREFIX, KafkaSink, kafka_producer
from kafka_helpers import fresh_topics
from schemas import Reason, ReviewEvent

QUICK_GROUP = dict(max_poll_interval_ms=10_000, session_timeout_ms=6_000, heartbeat_interval_ms=2_000, metrics_port=0)


def noisy_digits(n: int) -> list[dict]:
    data = load("digits")
    noisy, _ = inject_noise(data.labels, 0.1, n_classes=10, seed=5)
    return to_messages(data, noisy, order_seed=5)[:n]


def test_audit_writes_events_verdicts_and_rejects_in_the_format_it_always_had(tmp_path):
    lines = [orjson.dumps(m) for m in noisy_digits(300)]
    lines[10:10] = [b"{broken", b'{"sample_id": "x"}']
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out, rejects, verdicts = io.StringIO(), io.StringIO(), io.StringIO()
    audit_file(Pipeline(Settings().monitor_config(), None, metrics=Metrics()), source, out, rejects,
               batch_size=100, verdicts=verdicts)

    expected = {"out": [], "rejects": [], "verdicts": []}
    pipeline = Pipeline(Settings().monitor_config(), None, metrics=Metrics())
    records = iter([InputRecord(value, line=n) for n, value in enumerate(lines, start=1)])
    results = [pipeline.process(batch) for batch in iter(lambda: list(islice(records, 100)), [])]
    for result in results + [pipeline.flush()]:
        expected["out"] += [e.model_dump_json() + "\n" for e in result.events]
        expected["verdicts"] += [v.model_dump_json() + "\n" for v in result.verdicts]
        expected["rejects"] += [f'{{"line": {r.line}, "dead_letter": {d.model_dump_json()}}}\n'
                                for r, d in result.dead_letters]
    assert out.getvalue() == "".join(expected["out"]) and expected["out"]
    assert verdicts.getvalue() == "".join(expected["verdicts"])
    assert rejects.getvalue() == "".join(expected["rejects"])
    assert [orjson.loads(line)["line"] for line in rejects.getvalue().splitlines()] == [11, 12]


def event(i: int, priority: int) -> ReviewEvent:
    return ReviewEvent(event_id=f"e{i}", dataset="d", sample_id=f"s{i}", label="a", score=0.5 + i / 100,
                       reasons=[Reason(detector="confident", score=0.5)], priority=priority)


@pytest.mark.kafka
def test_kafka_sink_defers_events_over_the_review_budget_and_dead_letters_with_headers(kafka_broker, unique_name):
    bootstrap = kafka_broker.bootstrap_servers
    names = fresh_topics(bootstrap, unique_name, "reviews", "deferred", "dlq")
    settings = Settings(bootstrap_servers=bootstrap, review_topic=names["reviews"], dlq_topic=names["dlq"],
                        review_budget=2, review_deferred_topic=names["deferred"], **QUICK_GROUP)
    metrics = Metrics()
    bad = InputRecord(b"{broken")
    result = BatchResult(events=[event(i, priority) for i, priority in enumerate([3, 1, 2, 3, 1])],
                         dead_letters=[(bad, reject(bad, "not JSON", "not_json"))])
    producer = kafka_producer(settings)
    try:
        KafkaSink(settings, producer, metrics).deliver(result)
    finally:
        producer.close()

    config = {"bootstrap_servers": bootstrap}
    reviewed = [ReviewEvent.model_validate_json(m.value).sample_id for m in read_topic(config, names["reviews"], 2)]
    deferred = [ReviewEvent.model_validate_json(m.value).sample_id for m in read_topic(config, names["deferred"], 3)]
    assert reviewed == ["s4", "s1"], "the budget admits the most urgent first"
    assert sorted(deferred) == ["s0", "s2", "s3"]
    assert metrics.review_events_deferred._value.get() == 3
    [letter] = read_topic(config, names["dlq"], 1)
    assert dict(letter.headers)[ERROR_HEADER_PREFIX + "type"] == b"not_json"


@pytest.mark.kafka
def test_flush_on_stop_routes_the_final_reaudit_like_any_batch(kafka_broker, unique_name):
    bootstrap = kafka_broker.bootstrap_servers
    names = fresh_topics(bootstrap, unique_name, "in", "reviews", "urgent", "dlq")
    messages = noisy_digits(800)  # with the default detectors: few flags while streaming, many at the end
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for m in messages:
        producer.send(names["in"], value=orjson.dumps(m))
    producer.flush()
    producer.close()
    settings = Settings(bootstrap_servers=bootstrap, input_topic=names["in"], review_topic=names["reviews"],
                        dlq_topic=names["dlq"], group_id=names["in"], review_routes=f"detector:cluster={names['urgent']}",
                        **QUICK_GROUP)
    service = LabelwatchService(settings, Pipeline(settings.monitor_config(), None, metrics=Metrics()),
                                flush_on_stop=True)
    worker = threading.Thread(target=service.run)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        seen = []  # every record judged, and no live event for a second (re-audits may follow the last batch)
        while service.stats.processed < len(messages) or seen[-5:] != [service.stats.review_events] * 5:
            assert worker.is_alive() and time.monotonic() < deadline, "the service did not judge the stream"
            seen.append(service.stats.review_events)
            time.sleep(0.2)
        live = service.stats.review_events
    finally:
        service.stop()
        worker.join(timeout=60)
    assert not worker.is_alive()

    final = service.final.events
    # (the flag budget keeps the final re-audit's highest scores, all of priority 1: route by detector)
    urgent = {e.event_id for e in final if any(r.detector == "cluster" for r in e.reasons)}
    assert urgent and len(urgent) < len(final), "the final re-audit flags events with and without the clusters"
    assert service.stats.review_events == live + len(final)
    config = {"bootstrap_servers": bootstrap}
    on = {name: {ReviewEvent.model_validate_json(m.value).event_id for m in read_topic(config, names[name], 1, timeout=5)}
          for name in ("reviews", "urgent")}
    assert urgent <= on["urgent"] and not urgent & on["reviews"], "final events the clusters flag take their route"
    assert {e.event_id for e in final} - urgent <= on["reviews"]
