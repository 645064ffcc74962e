"""The desk's Kafka side: one thread that reads every topic into the :class:`ReviewQueue`, and the
producer that writes answers and leases, each acknowledged before it counts.

The desk keeps no state: it reads every partition of its topics from the beginning at each start
(manual assignment, nothing committed), and is ready once it has caught up with the ends they had
when it started. A record it cannot read is logged and counted, never fatal; it stays in its topic.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from consumer.desk.metrics import DeskMetrics
from consumer.service import broker_connected
from consumer.desk.queue import Lease, ReviewQueue
from consumer.desk.settings import DeskSettings
from schemas import Correction, ReviewEvent

log = logging.getLogger("labelwatch.desk")
OBSERVE_EVERY_S = 5.0
"""How often the queue gauges (open, answered today) are recomputed."""


class Unavailable(RuntimeError):
    """The broker did not acknowledge a write in time: nothing was recorded, the caller may retry."""


class Feed:
    """Tails the review (and deferred), corrections, leases and, when given, input topics."""

    def __init__(self, settings: DeskSettings, queue: ReviewQueue, metrics: DeskMetrics, *,
                 stall_after_s: float = 60.0):
        self.settings = settings
        self.queue = queue
        self.metrics = metrics
        self.stall_after_s = stall_after_s
        self._handlers: dict[str, Callable] = {settings.review_topic: self._event,
                                               settings.corrections_topic: self._answer,
                                               settings.leases_topic: self._lease}
        if settings.review_deferred_topic:
            self._handlers[settings.review_deferred_topic] = self._event
        if settings.input_topic:
            self._handlers[settings.input_topic] = self._input
        self._consumer: KafkaConsumer | None = None
        self._applied: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = time.monotonic()
        self.last_poll_at: float | None = None
        self._observed_at = float("-inf")
        self.error: str | None = "connecting to the brokers"

    # -- the reading thread --------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="labelwatch-desk-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._consumer is None:
                    self._consumer = self._connect()
                records = self._consumer.poll(timeout_ms=500, max_records=1000)
                for tp, batch in records.items():
                    handle = self._handlers[tp.topic]
                    for record in batch:
                        self._apply(handle, record)
                with self._changed:
                    for tp in self._consumer.assignment():
                        self._applied[tp] = self._consumer.position(tp)
                    self._changed.notify_all()
                self.last_poll_at = time.monotonic()
                self.error = None if broker_connected(self._consumer) else "no live connection to any broker"
                if self.last_poll_at - self._observed_at >= OBSERVE_EVERY_S:
                    self.metrics.observe(self.queue)
                    self._observed_at = self.last_poll_at
            except (KafkaError, OSError) as error:  # the broker is away: say so, and try again
                self.error = str(error) or type(error).__name__
                log.warning("review desk cannot read its topics (%s); retrying in 2 s", self.error)
                self._close()
                self._stop.wait(2.0)
        self._close()

    def _connect(self) -> KafkaConsumer:
        consumer = KafkaConsumer(**self.settings.kafka_config(), group_id=self.settings.group_id,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 client_id="labelwatch-review-desk")
        try:
            partitions = []
            for topic in self._handlers:
                found = consumer.partitions_for_topic(topic)
                if not found:
                    raise _Missing(f"topic {topic!r} does not exist; create it (the desk waits for it)")
                partitions += [TopicPartition(topic, p) for p in sorted(found)]
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            if self._ends is None:
                self._ends = consumer.end_offsets(partitions)
        except BaseException:
            consumer.close()
            raise
        self._applied = {}
        return consumer

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # closing a consumer whose broker is gone
                pass
            self._consumer = None

    def _apply(self, handle: Callable, record) -> None:
        try:
            handle(record)
        except (ValidationError, ValueError, orjson.JSONDecodeError, TypeError, KeyError) as error:
            self.metrics.invalid_records.labels(topic=record.topic).inc()
            log.warning("review desk skipped an unreadable record at %s[%d]@%d (it stays in the topic): %s",
                        record.topic, record.partition, record.offset, str(error).splitlines()[0][:300])

    def _event(self, record) -> None:
        self.queue.add_event(ReviewEvent.model_validate_json(record.value))

    def _answer(self, record) -> None:
        self.queue.add_answer(Correction.model_validate_json(record.value))

    def _lease(self, record) -> None:
        value = orjson.loads(record.value)
        self.queue.add_lease(Lease(str(value["event_id"]), str(value["reviewer_id"]), str(value["lease_id"]),
                                   float(value["expires_at"])), at=record.timestamp / 1000.0)

    def _input(self, record) -> None:
        """Only texts are taken from the annotations; what labelwatch run dead-letters is none of the desk's business."""
        try:
            value = orjson.loads(record.value) if record.value else None
        except orjson.JSONDecodeError:
            return
        if isinstance(value, dict) and isinstance(value.get("text"), str) and value.get("sample_id"):
            self.queue.add_text(str(value.get("dataset") or "default"), str(value["sample_id"]), value["text"])

    # -- what the others ask -------------------------------------------------------------------
    @property
    def caught_up(self) -> bool:
        """Whether everything the topics held when the desk started has been read."""
        if self._ends is None:
            return False
        with self._changed:
            return all(self._applied.get(tp, 0) >= end for tp, end in self._ends.items())

    def wait_applied(self, topic: str, partition: int, offset: int, timeout: float) -> bool:
        """Wait until the record at ``offset`` has been read into the queue."""
        tp = TopicPartition(topic, partition)
        with self._changed:
            return self._changed.wait_for(lambda: self._applied.get(tp, -1) > offset, timeout=timeout)

    def liveness(self) -> tuple[bool, dict]:
        since = time.monotonic() - (self.last_poll_at if self.last_poll_at is not None else self.started_at)
        return since < self.stall_after_s, {"seconds_since_last_poll": round(since, 3),
                                            "stall_after_s": self.stall_after_s}

    def readiness(self) -> tuple[bool, dict]:
        checks = {"broker_reachable": self.error is None and self.last_poll_at is not None,
                  "caught_up": self.caught_up}
        return all(checks.values()), {**checks, **({"error": self.error} if self.error else {})}


class _Missing(KafkaError):
    """A topic the desk reads does not exist: it waits for it, not ready meanwhile."""

    retriable = True

    def __str__(self) -> str:
        return str(self.args[0])


class Writer:
    """Writes answers and leases, and returns only once the broker has acknowledged them."""

    def __init__(self, settings: DeskSettings, metrics: DeskMetrics):
        self.settings = settings
        self.metrics = metrics
        self._producer = KafkaProducer(**settings.kafka_config(), acks="all", linger_ms=0,
                                       max_block_ms=settings.delivery_timeout_ms,
                                       delivery_timeout_ms=settings.delivery_timeout_ms,
                                       request_timeout_ms=min(settings.delivery_timeout_ms, 30_000),
                                       client_id="labelwatch-review-desk")

    def close(self) -> None:
        """Waits at most the delivery timeout: records the broker never took expire by then (and
        were refused to the reviewer, 503)."""
        self._producer.close(timeout=self.settings.delivery_timeout_ms / 1000 + 1)

    def _send(self, topic: str, key: str, value: bytes):
        try:
            future = self._producer.send(topic, key=key.encode(), value=value)
            return future.get(timeout=self.settings.delivery_timeout_ms / 1000)
        except KafkaError as error:
            self.metrics.delivery_failures.labels(topic=topic).inc()
            log.error("review desk could not write to %s: %s", topic, error)
            raise Unavailable(f"the broker did not acknowledge the write to {topic!r} ({type(error).__name__}); "
                              "nothing was recorded, try again") from error

    def answer(self, correction: Correction) -> None:
        self._send(self.settings.corrections_topic, correction.dataset, correction.model_dump_json().encode())

    def lease(self, event_id: str, reviewer_id: str, seconds: float) -> tuple[Lease, int, int]:
        """Write a claim; returns it with the partition and offset it got."""
        lease = Lease(event_id, reviewer_id, uuid.uuid4().hex, time.time() + seconds)
        meta = self._send(self.settings.leases_topic, event_id, orjson.dumps(lease.__dict__))
        return lease, meta.partition, meta.offset
