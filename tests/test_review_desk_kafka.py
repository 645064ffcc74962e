"""The review desk against a real broker: state only in Kafka, shared by replicas, honest when Kafka fails."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from consumer.demo.broker import LocalBroker
from consumer.desk.app import start_desk
from consumer.desk.reviewers import Reviewers
from consumer.desk.settings import DeskSettings
from schemas import Reason, ReviewEvent

pytestmark = pytest.mark.kafka

TOKENS = {"ana": "ana-token-0001", "bo": "bo-token-00002"}
REVIEWERS = Reviewers(TOKENS)


def call(url: str, reviewer: str | None = None, body: dict | None = None) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {TOKENS[reviewer]}"} if reviewer else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def until(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return value


def settings(bootstrap: str, unique: dict[str, str], **overrides) -> DeskSettings:
    return DeskSettings(bootstrap_servers=bootstrap, review_topic=unique["reviews"],
                        corrections_topic=unique["corrections"], leases_topic=unique["leases"],
                        http_host="127.0.0.1", http_port=0, **overrides)


def topics(bootstrap: str, unique_name, create: bool = True) -> dict[str, str]:
    names = {kind: unique_name(kind) for kind in ("reviews", "corrections", "leases")}
    if create:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(name, 1, 1) for name in names.values()])
        admin.close()
    return names


def produce_events(bootstrap: str, topic: str, n: int, *extra: bytes) -> list[str]:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(n):
        e = ReviewEvent(event_id=f"e{i}", dataset="pets", sample_id=f"s{i}", label="cat", suggested_label="dog",
                        score=0.5 + i / 100, reasons=[Reason(detector="cluster", score=0.5)])
        producer.send(topic, e.model_dump_json().encode())
    for value in extra:
        producer.send(topic, value)
    producer.flush()
    producer.close()
    return [f"e{i}" for i in reversed(range(n))]  # most urgent (highest score) first


def queue_of(url: str, reviewer: str) -> list[str]:
    status, items = call(url + "api/queue", reviewer)
    assert status == 200, items
    return [item["event_id"] for item in items]


def test_two_replicas_and_a_restart_show_one_queue_with_shared_leases_and_answers(kafka_broker, unique_name):
    bootstrap = kafka_broker.bootstrap_servers
    names = topics(bootstrap, unique_name)
    expected = produce_events(bootstrap, names["reviews"], 4, b"not a review event")
    a, b = start_desk(settings(bootstrap, names), REVIEWERS), start_desk(settings(bootstrap, names), REVIEWERS)
    try:
        for desk in (a, b):
            until(lambda: call(desk.url + "readyz")[0] == 200)
        assert queue_of(a.url, "ana") == queue_of(b.url, "bo") == expected
        status, page = call(a.url, "ana")  # ana opens the queue page on replica a: the top item is leased to her
        assert status == 200 and f'data-event-id="{expected[0]}"' in page
        until(lambda: queue_of(b.url, "bo") == expected[1:])  # replica b read the lease back from Kafka
        assert call(b.url + "api/answers", "bo", {"event_id": expected[0], "outcome": "confirmed"})[0] == 409
        status, page = call(b.url, "bo")
        assert f'data-event-id="{expected[1]}"' in page  # bo gets the next one

        status, correction = call(a.url + "api/answers", "ana", {"event_id": expected[0], "outcome": "false_alarm"})
        assert status == 201 and correction["reviewer_id"] == "ana" and correction["outcome"] == "false_alarm"
        assert call(a.url + "api/answers", "ana", {"event_id": expected[0], "outcome": "false_alarm"})[0] == 409
        until(lambda: expected[0] not in queue_of(b.url, "bo"))
        a.close()
        a = start_desk(settings(bootstrap, names), REVIEWERS)  # a restart keeps nothing of its own
        until(lambda: call(a.url + "readyz")[0] == 200)
        assert queue_of(a.url, "ana") == queue_of(b.url, "ana") == expected[2:]  # answered, and leased to bo
        assert "labelwatch_review_desk_invalid_records_total" in call(a.url + "metrics")[1]
        assert 'labelwatch_review_desk_invalid_records_total{topic="' + names["reviews"] + '"} 1.0' in \
            call(a.url + "metrics")[1]
    finally:
        a.close()
        b.close()


def test_answers_and_queue_need_a_reviewer(kafka_broker, unique_name):
    bootstrap = kafka_broker.bootstrap_servers
    names = topics(bootstrap, unique_name)
    expected = produce_events(bootstrap, names["reviews"], 1)
    desk = start_desk(settings(bootstrap, names), REVIEWERS)
    try:
        until(lambda: call(desk.url + "readyz")[0] == 200)
        assert call(desk.url + "api/queue")[0] == 401
        assert call(desk.url + "api/answers", body={"event_id": expected[0], "outcome": "skip"})[0] == 401
        request = urllib.request.Request(desk.url + "api/queue", headers={"Authorization": "Bearer ana-token-0002"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        assert call(desk.url + "api/answers", "ana", {"event_id": expected[0], "outcome": "maybe"})[0] == 422
        assert call(desk.url + "api/answers", "ana", {"event_id": "nope", "outcome": "skip"})[0] == 404
        assert call(desk.url + "api/answers", "ana", {"event_id": expected[0], "outcome": "confirmed",
                                                        "corrected_label": "cat"})[0] == 422  # that is a false alarm
        assert queue_of(desk.url, "ana") == expected  # nothing refused was recorded
    finally:
        desk.close()


def test_missing_topics_keep_the_desk_up_but_not_ready_and_it_creates_only_its_own_leases_topic(
        kafka_broker, unique_name, caplog):
    caplog.set_level(logging.INFO, logger="labelwatch.topics")
    bootstrap = kafka_broker.bootstrap_servers
    names = topics(bootstrap, unique_name, create=False)
    desk = start_desk(settings(bootstrap, names), REVIEWERS)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        why = until(lambda: (lambda r: r[1] if "does not exist" in r[1].get("error", "") else None)(
            call(desk.url + "readyz")))
        assert why["status"] == "unavailable" and names["reviews"] in why["error"]
        assert call(desk.url + "readyz")[0] == 503 and call(desk.url + "healthz")[0] == 200
        # the leases topic is the desk's internal one: it creates it; the user's topics it never does
        until(lambda: names["leases"] in admin.list_topics())
        assert f"created its internal topic {names['leases']!r}" in caplog.text
        assert "cleanup.policy=compact,delete" in caplog.text
        time.sleep(2.5)  # the reader's next try
        assert not {names["reviews"], names["corrections"]} & set(admin.list_topics())
        admin.create_topics([NewTopic(names[kind], 1, 1) for kind in ("reviews", "corrections")])
        until(lambda: call(desk.url + "readyz")[0] == 200, timeout=30)
        assert caplog.text.count("created its internal topic") == 1
    finally:
        admin.close()
        desk.close()


def test_an_answer_the_broker_does_not_acknowledge_is_refused_and_the_item_stays_open(unique_name):
    with LocalBroker() as broker:
        names = topics(broker.bootstrap_servers, unique_name)
        expected = produce_events(broker.bootstrap_servers, names["reviews"], 2)
        desk = start_desk(settings(broker.bootstrap_servers, names, delivery_timeout_ms=2_000), REVIEWERS)
        try:
            until(lambda: call(desk.url + "readyz")[0] == 200)
            broker.stop()
            started = time.monotonic()
            status, error = call(desk.url + "api/answers", "ana", {"event_id": expected[0], "outcome": "false_alarm"})
            assert status == 503 and "nothing was recorded" in error["error"]
            assert time.monotonic() - started < 20
            assert queue_of(desk.url, "ana") == expected
            until(lambda: call(desk.url + "readyz")[0] == 503)
            assert "labelwatch_review_desk_delivery_failures_total" in call(desk.url + "metrics")[1]
        finally:
            desk.close()
