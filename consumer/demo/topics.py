"""Topic helpers for local brokers: the demo, the tests and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

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
