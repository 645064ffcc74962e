"""``labelwatch embed`` in front of ``labelwatch run``, against a real broker: two embedder replicas
share a raw topic of four partitions, one is killed with ``kill -9`` mid-stream, and the judge still
gives every sample exactly one first verdict; copies of everything the embedders wrote, as an
embedder that lost its offsets would write them again, change no verdict."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from consumer.demo.broker import free_port
from consumer.demo.datasets import inject_noise, load, to_messages
from consumer.export import read_topic
from consumer.records import origin_of
from schemas import AnnotatedSample, DeadLetter, SampleVerdict
from kafka_helpers import QUICK_GROUP, committed, output_of, start_service, wait_for

pytestmark = pytest.mark.kafka

N_TEXTS, N_VECTORS = 600, 150
MALFORMED = [b"{broken", b'{"sample_id": "no-label", "text": "a tweet"}', b'{"sample_id": "e", "label": "x", "text": "  "}']


def start_embedder(bootstrap: str, topics: dict[str, str], group: str, *, defaults: bool = False):
    """One ``labelwatch embed`` replica: one thread, small polls (so a kill lands mid-stream) and quick group
    timings; or, with ``defaults``, as a newcomer starts it, every setting but the topics and group its default."""
    env = {**os.environ, **QUICK_GROUP, "LABELWATCH_EMBEDDING_PRELOAD": "true", "LABELWATCH_MAX_POLL_RECORDS": "40",
           "OMP_NUM_THREADS": "1", "LABELWATCH_EMBEDDING_THREADS": "1"}
    if defaults:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABELWATCH_")}
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer", "embed", "--bootstrap-servers", bootstrap, "--input-topic", topics["raw"],
         "--output-topic", topics["in"], "--dlq-topic", topics["dlq"], "--group-id", group, "--metrics-port", "0",
         "--log-format", "text"], env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log = log
    return process


def end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return sum(consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)]).values())
    finally:
        consumer.close()


def first_verdicts(bootstrap: str, topic: str, expected: int) -> dict[str, set[str]]:
    """Sample id -> the event ids of its first (not late) verdicts."""
    found = defaultdict(set)
    for record in read_topic({"bootstrap_servers": [bootstrap]}, topic, expected=expected, timeout=5):
        verdict = SampleVerdict.model_validate_json(record.value)
        if not verdict.late:
            found[verdict.sample_id].add(verdict.event_id)
    return found


def stage_topics(bootstrap: str, unique_name, *, internal_partitions: int) -> dict[str, str]:
    """A raw topic of four partitions, the internal one, and one-partition reviews, dlq and verdicts."""
    topics = {kind: unique_name(kind) for kind in ("raw", "in", "reviews", "dlq", "verdicts")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topics["raw"], 4, 1), NewTopic(topics["in"], internal_partitions, 1)]
                        + [NewTopic(topics[k], 1, 1) for k in ("reviews", "dlq", "verdicts")])
    admin.close()
    return topics


def test_two_embedders_and_a_kill_give_every_sample_one_first_verdict(kafka_broker, unique_name, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    topics = stage_topics(bootstrap, unique_name, internal_partitions=2)

    tweets, digits = load("tweets"), load("digits")
    messages = (to_messages(tweets, inject_noise(tweets.labels, 0.1, n_classes=len(tweets.class_names), seed=0)[0])[:N_TEXTS]
                + to_messages(digits, inject_noise(digits.labels, 0.1, n_classes=10, seed=0)[0])[:N_VECTORS])
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for message in messages:  # keyed by sample: every raw partition holds both datasets
        producer.send(topics["raw"], key=message["sample_id"].encode(), value=orjson.dumps(message))
    for value in MALFORMED:
        producer.send(topics["raw"], value=value)
    producer.flush()
    n = len(messages)

    port = free_port()
    judge = start_service(bootstrap, tmp_path / "state", topics=topics, group=unique_name("judge"),
                          flags=("--metrics-port", str(port)))
    group = unique_name("embed")
    first, second = start_embedder(bootstrap, topics, group), start_embedder(bootstrap, topics, group)
    processes = [judge, first, second]
    try:
        wait_for(lambda: end_offsets(bootstrap, topics["in"], 2) >= 150, "150 embedded samples", 180, *processes)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        processes.remove(first)

        verdicts = judged_once(bootstrap, topics["verdicts"], messages, processes)

        # what the embedders wrote: keyed by dataset (one partition each), embedded, origins named
        internal = read_topic({"bootstrap_servers": [bootstrap]}, topics["in"], expected=n, timeout=10)
        partitions = defaultdict(set)
        for record in internal:
            sample = AnnotatedSample.model_validate_json(record.value)
            partitions[sample.dataset].add(record.partition)
            assert len(sample.embedding) == (384 if sample.dataset == "tweets" else 64)
            assert sample.dataset == "digits" or sample.text
            assert origin_of(record.headers).topic == topics["raw"]
        assert {dataset: len(p) for dataset, p in partitions.items()} == {"tweets": 1, "digits": 1}
        assert len({origin_of(r.headers) for r in internal}) == n  # copies, if any, repeat an origin

        letters = [DeadLetter.model_validate_json(r.value)
                   for r in read_topic({"bootstrap_servers": [bootstrap]}, topics["dlq"], expected=3, timeout=10)]
        assert sorted(letter.error_type for letter in letters) == ["not_json", "schema", "schema"]
        assert all(letter.source.topic == topics["raw"] and letter.reason for letter in letters)

        # an embedder that lost its offsets writes what it embedded again, origins and all: the judge skips every copy
        for record in internal:
            producer.send(topics["in"], key=record.key, value=record.value, headers=record.headers)
        producer.flush()
        total = end_offsets(bootstrap, topics["in"], 2)
        wait_for(lambda: committed(bootstrap, judge_group(judge), topics["in"], 2) >= total,
                 "the judge to commit the copies", 120, *processes)
        assert first_verdicts(bootstrap, topics["verdicts"], n) == verdicts
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert metric(metrics, "labelwatch_samples_processed_total") == n  # each sample learned once
        assert metric(metrics, "labelwatch_samples_replayed_total") >= len(internal)  # every copy skipped
        assert "Traceback" not in output_of(second) + output_of(judge)
        producer.close()
    finally:
        stop(processes)


def test_with_default_group_settings_the_surviving_embedder_takes_over_and_every_sample_is_judged_once(
        kafka_broker, unique_name, tmp_path):
    # issue 27's scenario: 1,500 texts of one dataset on a 4-partition raw topic, two embedders with
    # default settings (group `embedders`) writing to a 4-partition internal topic, one judge; one
    # embedder is killed mid-stream
    bootstrap = kafka_broker.bootstrap_servers
    topics = stage_topics(bootstrap, unique_name, internal_partitions=4)
    reviews = load("reviews")
    messages = to_messages(reviews, inject_noise(reviews.labels, 0.1, n_classes=len(reviews.class_names), seed=0)[0],
                           dataset="mail")[:1500]
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for message in messages:
        producer.send(topics["raw"], key=message["sample_id"].encode(), value=orjson.dumps(message))
    producer.flush()
    producer.close()
    n = len(messages)

    judge = start_service(bootstrap, tmp_path / "state", topics=topics, group=unique_name("judge"))
    group = unique_name("embedders")
    first, second = (start_embedder(bootstrap, topics, group, defaults=True) for _ in range(2))
    processes = [judge, first, second]
    try:
        wait_for(lambda: 0 < end_offsets(bootstrap, topics["in"], 4), "the first embedded samples", 300, *processes)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        processes.remove(first)
        assert end_offsets(bootstrap, topics["in"], 4) < n, "the kill came after the stream's end: it tests nothing"
        killed_at = time.monotonic()

        verdicts = judged_once(bootstrap, topics["verdicts"], messages, processes)
        print(f"all {n} judged {time.monotonic() - killed_at:.0f} s after the kill")
        assert "Traceback" not in output_of(second) + output_of(judge)
    finally:
        stop(processes)


def judged_once(bootstrap: str, topic: str, messages: list[dict], processes) -> dict[str, set[str]]:
    """Wait until every message's sample has a first verdict; assert it has exactly one."""
    n = len(messages)
    verdicts = wait_for(lambda: (v := first_verdicts(bootstrap, topic, n)) and len(v) >= n and v,
                        f"first verdicts of all {n} samples", 300, *processes)
    assert set(verdicts) == {m["sample_id"] for m in messages}
    assert all(len(ids) == 1 for ids in verdicts.values()), "a sample got first verdicts that differ"
    return verdicts


def stop(processes) -> None:
    """SIGTERM every process still running, then wait for each (SIGKILL after 30 s)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def metric(text: str, name: str) -> float:
    """The sum of every sample of ``name``."""
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def judge_group(process) -> str:
    return process.args[process.args.index("--group-id") + 1]
