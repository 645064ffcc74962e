"""Topic helpers for local brokers: the demo, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from kafka import KafkaConsumer

from consumer.settings import Settings


def ensure_topics(settings: Settings, topics: Sequence[str], partitions: int = 1) -> None:
    """Create ``topics`` if they do not exist yet (for local brokers and the demo)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**settings.kafka_config())
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(t, partitions, 1) for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def read_topic(kafka_config: dict, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Every record of ``topic`` from the beginning, waiting up to ``timeout`` s for ``expected`` of them."""
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=1500, **kafka_config)
    records, deadline = [], time.monotonic() + timeout
    with contextlib.closing(consumer):
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer)
    return records
