"""Where a batch's outputs go: review events, dead letters and verdicts, to Kafka or to files.

Every mode delivers through a sink: ``labelwatch run`` and ``labelwatch demo`` through
:class:`KafkaSink` (routing, the review budget, error headers and delivery retries), ``labelwatch
audit`` through :class:`FileSink`.
"""

from __future__ import annotations

import logging
import threading
from typing import IO, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError

from consumer.metrics import Metrics
from consumer.records import BatchResult
from consumer.routing import ReviewRouter
from consumer.settings import Settings
from schemas import DeadLetter

log = logging.getLogger(__name__)

ERROR_HEADER_PREFIX = "labelwatch.errors."
MAX_DELIVERY_BACKOFF_S = 30.0


class Sink(Protocol):
    def deliver(self, result: BatchResult) -> None:
        """Write out every output of ``result``; raise if any could not be."""


class DeliveryError(RuntimeError):
    """Outputs of a batch could not be delivered; the batch was not committed and will be replayed."""


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """Error context for a dead letter, in the style of Kafka Connect's ``errors.deadletterqueue``.

    >>> letter = DeadLetter.from_bytes(b"oops", reason="not JSON", error_type="not_json")
    >>> [name for name, _ in dead_letter_headers(letter)]
    ['labelwatch.errors.reason', 'labelwatch.errors.type', 'labelwatch.errors.exception.message']
    """
    headers = [(ERROR_HEADER_PREFIX + "reason", letter.reason.encode()),
               (ERROR_HEADER_PREFIX + "type", letter.error_type.encode()),
               (ERROR_HEADER_PREFIX + "exception.message", letter.reason.encode())]
    if letter.exception:
        headers.append((ERROR_HEADER_PREFIX + "exception.class.name", letter.exception.encode()))
    if letter.source:
        headers += [(ERROR_HEADER_PREFIX + "topic", letter.source.topic.encode()),
                    (ERROR_HEADER_PREFIX + "partition", str(letter.source.partition).encode()),
                    (ERROR_HEADER_PREFIX + "offset", str(letter.source.offset).encode())]
    return headers


def kafka_producer(settings: Settings, **overrides) -> KafkaProducer:
    """The producer of the outputs: every record acknowledged by all in-sync replicas."""
    timeout = settings.delivery_timeout_ms
    # No idempotent producer: kafka-python 3 turns a timed-out InitProducerId (a broker stall at
    # start-up) into a fatal state in which every later send fails. Duplicates from producer
    # retries are harmless here: every output carries a deterministic event_id.
    options = dict(acks="all", linger_ms=5, delivery_timeout_ms=timeout, request_timeout_ms=min(30_000, timeout - 5),
                   enable_idempotence=False, **settings.kafka_config())
    return KafkaProducer(**{**options, **overrides})


class KafkaSink:
    """Produces review events (routed, within the review budget), dead letters (with error headers)
    and, when a verdict topic is set, verdicts; waits until the broker acknowledged every one.

    ``stop``, once set, cuts the resends short: the batch fails at once instead of after a backoff.
    """

    def __init__(self, settings: Settings, producer: KafkaProducer, metrics: Metrics,
                 stop: threading.Event | None = None):
        self.settings = settings
        self.producer = producer
        self.metrics = metrics
        self.stop = stop or threading.Event()
        self.router = ReviewRouter.of(settings)

    def deliver(self, result: BatchResult) -> None:
        """Produce a batch's outputs and wait until the broker acknowledged every one.

        Records that fail are sent again after a backoff that doubles each time. After
        ``delivery_attempts`` attempts, :class:`DeliveryError`: the caller has not marked the batch
        for commit, so it is replayed, with the same event ids, by whoever consumes it next.
        """
        s = self.settings
        routed = self.router.route(result.events)
        outgoing = [(topic, e.sample_id.encode(), e.model_dump_json().encode(), None) for topic, e in routed]
        deferred = sum(topic == self.router.deferred_topic for topic, _ in routed)
        if deferred:
            self.metrics.review_events_deferred.inc(deferred)
        outgoing += [(s.dlq_topic, None, letter.model_dump_json().encode(), dead_letter_headers(letter))
                     for _, letter in result.dead_letters]
        if s.verdict_topic:
            outgoing += [(s.verdict_topic, v.sample_id.encode(), v.model_dump_json().encode(), None)
                         for v in result.verdicts]
        for attempt in range(1, s.delivery_attempts + 1):
            outgoing, error = self._send_all(outgoing)
            if not outgoing:
                return
            if attempt == s.delivery_attempts or self.stop.is_set():
                break
            backoff = min(s.delivery_backoff_ms / 1000 * 2 ** (attempt - 1), MAX_DELIVERY_BACKOFF_S)
            log.warning("%d output records failed (%s: %s); sending them again in %.1f s (attempt %d of %d)",
                        len(outgoing), type(error).__name__, error, backoff, attempt + 1, s.delivery_attempts)
            for topic, *_ in outgoing:
                self.metrics.produce_retries.labels(topic=topic).inc()
            self.stop.wait(backoff)
        raise DeliveryError(f"{len(outgoing)} output records could not be delivered ({type(error).__name__}: "
                            f"{error}); the batch is not committed and will be replayed")

    def _send_all(self, outgoing: list) -> tuple[list, KafkaError | None]:
        """Send ``outgoing`` and wait for every acknowledgement; returns the records that failed."""
        failed, last_error, sent = [], None, []
        for record in outgoing:
            topic, key, value, headers = record
            try:
                sent.append((record, self.producer.send(topic, key=key, value=value, headers=headers)))
            except KafkaError as error:  # e.g. no metadata within max_block_ms while the broker is away
                failed.append(record)
                last_error = error
        self.producer.flush()
        for record, future in sent:
            try:
                future.get(timeout=self.settings.delivery_timeout_ms / 1000 + 5)
            except KafkaError as error:
                failed.append(record)
                last_error = error
        return failed, last_error


class FileSink:
    """Writes review events and, when given a file, verdicts as JSON lines; dead letters to ``rejects``
    as ``{"line": N, "dead_letter": {...}}`` lines that name the input line.

    >>> import io
    >>> from consumer.records import InputRecord, reject
    >>> events, rejects = io.StringIO(), io.StringIO()
    >>> record = InputRecord(b"oops", line=3)
    >>> FileSink(events, rejects).deliver(BatchResult(dead_letters=[(record, reject(record, "not JSON", "not_json"))]))
    >>> events.getvalue(), rejects.getvalue()[:32]
    ('', '{"line": 3, "dead_letter": {"rea')
    """

    def __init__(self, events: IO[str], rejects: IO[str], verdicts: IO[str] | None = None):
        self.events = events
        self.rejects = rejects
        self.verdicts = verdicts

    def deliver(self, result: BatchResult) -> None:
        for event in result.events:
            self.events.write(event.model_dump_json() + "\n")
        if self.verdicts is not None:
            self.verdicts.writelines(v.model_dump_json() + "\n" for v in result.verdicts)
        for record, letter in result.dead_letters:
            self.rejects.write(f'{{"line": {record.line}, "dead_letter": {letter.model_dump_json()}}}\n')
