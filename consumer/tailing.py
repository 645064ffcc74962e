"""Kafka for the helper processes (the review desk, the Label Studio bridge), which keep no state.

- :class:`TopicReader` reads every partition of some topics from the beginning at each start
  (manual assignment, nothing committed) and hands each record to its topic's handler, in one
  thread, forever. It is ready once it has caught up with the ends the topics had when it
  started and a broker answers. A record a handler cannot read is logged and counted, never
  fatal; it stays in its topic.
- :func:`broker_connected` says whether a consumer holds a live broker connection (``labelwatch
  run``'s readiness uses it too).
- :class:`AckedWriter` sends one record and returns only once the broker acknowledged it, or
  raises :class:`Unavailable`: nothing is ever reported written that was not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from consumer.topics import TopicSpec, ensure_internal_topic


log = logging.getLogger("labelwatch.tailing")

UNREADABLE = (ValidationError, ValueError, orjson.JSONDecodeError, TypeError, KeyError)
"""What a handler raises for a record it cannot read."""


def broker_connected(consumer: KafkaConsumer) -> bool:
    """Whether the consumer holds a live connection to some broker of the cluster.

    kafka-python has no public call for it (``bootstrap_connected`` turns false once metadata is
    fetched), so this reads its client; if that ever changes shape, a poll that did not raise is
    taken as reachable.
    """
    try:
        client = consumer._client
        return any(client.connected(broker.node_id) for broker in client.cluster.brokers())
    except Exception:  # noqa: BLE001 - a private API: degrade to "the poll worked"
        return True


def update_lag(consumer: KafkaConsumer, gauge) -> None:
    """Set ``gauge`` (labels ``topic``, ``partition``) to how far each assigned partition is behind its end;
    a partition whose position no broker answers for keeps its last value."""
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        try:
            position = consumer.position(tp, timeout_ms=1000)
        except KafkaError:
            return
        if position is not None:
            gauge.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, highwater - position))


class Unavailable(RuntimeError):
    """The broker did not acknowledge a write in time: nothing was recorded, the caller may retry."""


class MissingTopic(KafkaError):
    """A topic the reader reads does not exist: it waits for it, not ready meanwhile."""

    retriable = True

    def __str__(self) -> str:
        return str(self.args[0])


class TopicReader:
    """Reads ``handlers``' topics from the beginning into their handlers, in a thread of its own.

    ``on_unreadable(record, error)`` hears of each record a handler could not read; ``after_poll``
    runs after every poll (to refresh gauges, say). ``internal`` holds the reader's own topics,
    which it creates when they are missing; it waits for every other topic to be created.
    """

    def __init__(self, kafka_config: Mapping, group_id: str, handlers: Mapping[str, Callable], *, name: str,
                 on_unreadable: Callable | None = None, after_poll: Callable[[], None] | None = None,
                 stall_after_s: float = 60.0, internal: Iterable[TopicSpec] = ()):
        self.kafka_config = dict(kafka_config)
        self.group_id = group_id
        self.handlers = dict(handlers)
        self.name = name
        self.internal = {spec.name: spec for spec in internal}
        self.on_unreadable = on_unreadable
        self.after_poll = after_poll
        self.stall_after_s = stall_after_s
        self._consumer: KafkaConsumer | None = None
        self._applied: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = time.monotonic()
        self.last_poll_at: float | None = None
        self.error: str | None = "connecting to the brokers"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-reader", daemon=True)
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
                    handle = self.handlers[tp.topic]
                    for record in batch:
                        self._apply(handle, record)
                with self._changed:
                    for tp in self._consumer.assignment():
                        self._applied[tp] = self._consumer.position(tp)
                    self._changed.notify_all()
                self.last_poll_at = time.monotonic()
                self.error = None if broker_connected(self._consumer) else "no live connection to any broker"
                if self.after_poll is not None:
                    self.after_poll()
            except (KafkaError, OSError) as error:  # the broker is away: say so, and try again
                self.error = str(error) or type(error).__name__
                log.warning("%s cannot read its topics (%s); retrying in 2 s", self.name, self.error)
                self._close()
                self._stop.wait(2.0)
        self._close()

    def _connect(self) -> KafkaConsumer:
        consumer = KafkaConsumer(**self.kafka_config, group_id=self.group_id, enable_auto_commit=False,
                                 auto_offset_reset="earliest", client_id=self.name)
        try:
            partitions = []
            for topic in sorted(self.handlers, key=lambda name: name not in self.internal):  # its own first
                found = consumer.partitions_for_topic(topic)
                if not found and topic in self.internal:
                    ensure_internal_topic(self.kafka_config, self.internal[topic], owner=self.name)
                    found = consumer.partitions_for_topic(topic)
                if not found:
                    raise MissingTopic(f"topic {topic!r} does not exist; create it ({self.name} waits for it)")
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
            except Exception:  # noqa: BLE001 - closing a consumer whose broker is gone
                pass
            self._consumer = None

    def _apply(self, handle: Callable, record) -> None:
        try:
            handle(record)
        except UNREADABLE as error:
            if self.on_unreadable is not None:
                self.on_unreadable(record, error)
            log.warning("%s skipped an unreadable record at %s[%d]@%d (it stays in the topic): %s", self.name,
                        record.topic, record.partition, record.offset, str(error).splitlines()[0][:300])

    @property
    def caught_up(self) -> bool:
        """Whether everything the topics held when the reader started has been read."""
        if self._ends is None:
            return False
        with self._changed:
            return all(self._applied.get(tp, 0) >= end for tp, end in self._ends.items())

    def wait_applied(self, topic: str, partition: int, offset: int, timeout: float) -> bool:
        """Wait until the record at ``offset`` has been handled."""
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


class AckedWriter:
    """Sends records one at a time and returns once the broker acknowledged each."""

    def __init__(self, kafka_config: Mapping, *, timeout_ms: int, name: str,
                 on_failure: Callable[[str], None] | None = None):
        self.timeout_ms = timeout_ms
        self.name = name
        self.on_failure = on_failure
        self._producer = KafkaProducer(**kafka_config, acks="all", linger_ms=0, max_block_ms=timeout_ms,
                                       delivery_timeout_ms=timeout_ms, request_timeout_ms=min(timeout_ms, 30_000),
                                       client_id=name)

    def send(self, topic: str, key: str, value: bytes):
        """The record's metadata (partition, offset) once acknowledged; :class:`Unavailable` otherwise."""
        try:
            return self._producer.send(topic, key=key.encode(), value=value).get(timeout=self.timeout_ms / 1000)
        except KafkaError as error:
            if self.on_failure is not None:
                self.on_failure(topic)
            log.error("%s could not write to %s: %s", self.name, topic, error)
            raise Unavailable(f"the broker did not acknowledge the write to {topic!r} ({type(error).__name__}); "
                              "nothing was recorded, try again") from error

    def close(self) -> None:
        """Waits at most the delivery timeout: records the broker never took expire by then (and
        were refused to their caller)."""
        self._producer.close(timeout=self.timeout_ms / 1000 + 1)
