"""Kafka topics: which ones each command needs, and creating them.

Topics that hold the user's data (annotations, review events, corrections, dead letters) are
created only when asked, by ``labelwatch topics create``: a service that created a misspelt input
topic would then wait on an empty topic, ready and silent, instead of saying that it is missing.
The one topic only labelwatch uses, the review desk's leases, is internal, and the desk creates it
itself when it is missing (as Kafka Connect and Kafka Streams create theirs), compacted, with the
configs of :func:`leases_topic`.

>>> spec = leases_topic("label-review-leases", replication_factor=3)
>>> spec.configs["cleanup.policy"], spec.replication_factor
('compact,delete', 3)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger("labelwatch.topics")

LEASES_RETENTION_MS = 7 * 24 * 3600 * 1000
"""A lease lasts an hour at most (the desk's ``lease_seconds``): after a week it only slows the desk's start."""
LEASES_MIN_COMPACTION_LAG_MS = 3600 * 1000
"""No lease is compacted away while it may still hold: the first claim in log order wins."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: its name, partitions, replication factor and topic configs."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    configs: Mapping[str, str] = field(default_factory=dict)


def leases_topic(name: str, replication_factor: int = 1) -> TopicSpec:
    """The desk's internal leases topic: one partition, compacted by event id, old leases deleted."""
    return TopicSpec(name, 1, replication_factor, {"cleanup.policy": "compact,delete",
                                                   "retention.ms": str(LEASES_RETENTION_MS),
                                                   "min.compaction.lag.ms": str(LEASES_MIN_COMPACTION_LAG_MS)})


def topics_of(settings) -> list[str]:
    """The topics a command's settings name, in field order: every ``*_topic`` field that is set,
    and, for ``labelwatch run``, every topic its review router may write to."""
    names = [value for name, value in settings if name.endswith("_topic") and value]
    if hasattr(settings, "review_routes"):
        from consumer.routing import ReviewRouter

        names += ReviewRouter.of(settings).topics
    return list(dict.fromkeys(names))


def create_topics(kafka_config: Mapping, specs: Iterable[TopicSpec]) -> dict[str, str]:
    """Create every topic of ``specs`` that does not exist; ``{name: "created" or "exists"}``.

    Raises kafka-python's errors when the cluster refuses one (a replication factor above the
    number of brokers, say): nothing is reported created that was not.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    specs = list({spec.name: spec for spec in specs}.values())
    admin = KafkaAdminClient(**kafka_config, client_id="labelwatch-topics")
    try:
        existing = set(admin.list_topics())
        outcome = {}
        for spec in specs:
            outcome[spec.name] = "exists"
            if spec.name in existing:
                continue
            try:
                admin.create_topics([NewTopic(spec.name, spec.partitions, spec.replication_factor,
                                              topic_configs=dict(spec.configs))])
                outcome[spec.name] = "created"
            except TopicAlreadyExistsError:  # another process created it meanwhile
                pass
        return outcome
    finally:
        admin.close()


def ensure_internal_topic(kafka_config: Mapping, spec: TopicSpec, *, owner: str) -> bool:
    """Create ``owner``'s internal topic ``spec`` if it is missing, and log it; whether it was created."""
    created = create_topics(kafka_config, [spec])[spec.name] == "created"
    if created:
        log.info("%s created its internal topic %r (%d partition(s), replication factor %d, %s)", owner, spec.name,
                 spec.partitions, spec.replication_factor,
                 ", ".join(f"{key}={value}" for key, value in spec.configs.items()))
    return created
