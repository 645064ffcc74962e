"""The desk's Kafka side: the topics it reads into the :class:`ReviewQueue`, and the writes that
change the queue (answers and leases), each acknowledged before it counts (:mod:`consumer.tailing`)."""

from __future__ import annotations

import time
import uuid

import orjson

from consumer.desk.metrics import DeskMetrics
from consumer.desk.queue import Lease, ReviewQueue
from consumer.desk.settings import DeskSettings
from consumer.tailing import AckedWriter, TopicReader
from consumer.topics import leases_topic
from schemas import Correction, ReviewEvent

OBSERVE_EVERY_S = 5.0
"""How often the queue gauges (open, answered today) are recomputed."""


def desk_reader(settings: DeskSettings, queue: ReviewQueue, metrics: DeskMetrics) -> TopicReader:
    """Reads the review (and deferred), corrections, leases and, when given, input topics into ``queue``."""

    def event(record) -> None:
        queue.add_event(ReviewEvent.model_validate_json(record.value))

    def answer(record) -> None:
        queue.add_answer(Correction.model_validate_json(record.value))

    def lease(record) -> None:
        value = orjson.loads(record.value)
        queue.add_lease(Lease(str(value["event_id"]), str(value["reviewer_id"]), str(value["lease_id"]),
                              float(value["expires_at"])), at=record.timestamp / 1000.0)

    def annotation(record) -> None:
        """Only texts are taken; what labelwatch run dead-letters is none of the desk's business."""
        try:
            value = orjson.loads(record.value) if record.value else None
        except orjson.JSONDecodeError:
            return
        if isinstance(value, dict) and isinstance(value.get("text"), str) and value.get("sample_id"):
            queue.add_text(str(value.get("dataset") or "default"), str(value["sample_id"]), value["text"])

    handlers = {settings.review_topic: event, settings.corrections_topic: answer, settings.leases_topic: lease}
    if settings.review_deferred_topic:
        handlers[settings.review_deferred_topic] = event
    if settings.input_topic:
        handlers[settings.input_topic] = annotation
    observed = [float("-inf")]

    def refresh_gauges() -> None:
        if time.monotonic() - observed[0] >= OBSERVE_EVERY_S:
            metrics.observe(queue)
            observed[0] = time.monotonic()

    return TopicReader(settings.kafka_config(), settings.group_id, handlers, name="labelwatch-review-desk",
                       on_unreadable=lambda record, _: metrics.invalid_records.labels(topic=record.topic).inc(),
                       after_poll=refresh_gauges,
                       internal=[leases_topic(settings.leases_topic, settings.leases_replication_factor)])


class Writer:
    """Writes answers and leases, and returns only once the broker has acknowledged them."""

    def __init__(self, settings: DeskSettings, metrics: DeskMetrics):
        self.settings = settings
        self._writer = AckedWriter(settings.kafka_config(), timeout_ms=settings.delivery_timeout_ms,
                                   name="labelwatch-review-desk",
                                   on_failure=lambda topic: metrics.delivery_failures.labels(topic=topic).inc())

    def close(self) -> None:
        self._writer.close()

    def answer(self, correction: Correction) -> None:
        self._writer.send(self.settings.corrections_topic, correction.dataset, correction.model_dump_json().encode())

    def lease(self, event_id: str, reviewer_id: str, seconds: float) -> tuple[Lease, int, int]:
        """Write a claim; returns it with the partition and offset it got."""
        lease = Lease(event_id, reviewer_id, uuid.uuid4().hex, time.time() + seconds)
        meta = self._writer.send(self.settings.leases_topic, event_id, orjson.dumps(lease.__dict__))
        return lease, meta.partition, meta.offset
