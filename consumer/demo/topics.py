"""Topic helpers for local brokers: the demo, the tests and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

from consumer.settings import Settings
from consumer.topics import TopicSpec, create_topics


def ensure_topics(settings: Settings, topics: Sequence[str], partitions: int = 1) -> None:
    """Create ``topics`` if they do not exist yet (for local brokers and the demo)."""
    create_topics(settings.kafka_config(), [TopicSpec(t, partitions) for t in topics if t])
