"""``labelwatch topics create`` against a real broker: every topic the chosen commands use, once."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kafka import KafkaConsumer

from consumer.desk.settings import DeskSettings
from consumer.settings import Settings
from consumer.topics import topics_of


def topics_create(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "consumer", "topics", "create", "--bootstrap-servers", bootstrap,
                           *args], capture_output=True, text=True, timeout=120)


def partitions(bootstrap: str, names) -> dict[str, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return {name: len(consumer.partitions_for_topic(name) or ()) for name in names}
    finally:
        consumer.close()


@pytest.mark.kafka
def test_topics_create_makes_every_topic_of_the_chosen_commands_and_leaves_existing_ones(kafka_broker, unique_name):
    bootstrap = kafka_broker.bootstrap_servers
    names = {flag: unique_name(flag) for flag in ("input", "review", "dlq", "corrections", "leases", "urgent")}
    flags = [f"--{flag}-topic={name}" for flag, name in names.items() if flag != "urgent"]
    flags += [f"--review-routes=priority:1={names['urgent']}", "--review-budget=10"]
    done = topics_create(bootstrap, "--commands", "run,review", "--partitions", "3", *flags)
    assert done.returncode == 0, done.stderr
    wanted = [*names.values(), names["review"] + "-deferred"]
    assert sorted(done.stdout.split()) == sorted(["created"] * len(wanted) + wanted)
    found = partitions(bootstrap, wanted)
    assert found == {name: 1 if name == names["leases"] else 3 for name in wanted}

    again = topics_create(bootstrap, "--commands", "run,review", *flags)
    assert again.returncode == 0 and again.stdout.split().count("exists") == len(wanted), again.stdout


@pytest.mark.kafka
def test_topics_create_takes_only_the_topics_a_command_uses(kafka_broker, unique_name):
    bootstrap = kafka_broker.bootstrap_servers
    raw, embedded, dlq = unique_name("raw"), unique_name("embedded"), unique_name("dlq")
    done = topics_create(bootstrap, "--commands", "embed", "--input-topic", raw, "--output-topic", embedded,
                         "--dlq-topic", dlq)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == sorted(["created"] * 3 + [raw, embedded, dlq])


@pytest.mark.kafka
def test_topics_create_refuses_unknown_commands_and_says_when_no_broker_answers(kafka_broker):
    unknown = topics_create(kafka_broker.bootstrap_servers, "--commands", "run,judge")
    assert unknown.returncode != 0 and "--commands takes some of run, embed, review, label-studio" in unknown.stderr
    away = topics_create("127.0.0.1:1")
    assert away.returncode != 0 and "labelwatch topics: no broker answered at 127.0.0.1:1" in away.stderr, away.stderr


def test_the_topics_of_a_command_are_the_ones_its_settings_name(clean_env):
    assert topics_of(Settings()) == ["annotations", "label-reviews", "annotations-dlq"]
    assert topics_of(Settings(corrections_topic="c", review_budget=5, review_routes="detector:consensus=d")) == [
        "annotations", "label-reviews", "annotations-dlq", "c", "d", "label-reviews-deferred"]
    assert topics_of(DeskSettings(input_topic="in")) == [
        "label-reviews", "label-corrections", "label-review-leases", "in"]
