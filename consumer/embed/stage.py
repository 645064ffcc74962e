"""``labelwatch embed``: a stateless stage that embeds raw annotations and repartitions them by dataset.

Raw annotations arrive on any number of partitions, keyed however the producers like. Any number
of embedder replicas share them as one consumer group; each embeds its records' texts and writes
every sample, now carrying its embedding, to an internal topic keyed by ``dataset``, which
``labelwatch run`` judges (one judge per dataset). This is the repartition pattern of Kafka
Streams: the text path scales with embedder replicas.

Guarantee: **at-least-once**, and no sample judged twice.

- A poll's outputs are produced in input order with one request in flight per broker, flushed and
  all acknowledged before its offsets are committed. A delivery that fails stops the stage
  uncommitted (:class:`EmbedDeliveryError`): its replacement embeds the poll again.
- Each output names its raw record in ``labelwatch.origin.*`` headers. The copies a restarted or
  rebalanced embedder writes again fall below the origin position the judge has already passed,
  and ``labelwatch run`` skips them (:class:`~consumer.positions.LogPositions`).
- Invalid records go to the dead-letter topic with their reason, from here: they never reach the
  internal topic.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kafka import KafkaConsumer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumer.embed.metrics import EmbedMetrics
from consumer.health import Health
from consumer.records import InputRecord, decode, input_records, origin_headers, reject
from consumer.service import consumer_options
from consumer.sinks import dead_letter_headers, kafka_producer
from consumer.tailing import broker_connected, update_lag
from consumer.vectors import Embedder
from schemas import AnnotatedSample, DeadLetter, SourcePosition

log = logging.getLogger("labelwatch.embed")

Output = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
"""One record to produce: topic, key, value, headers."""


class EmbedDeliveryError(RuntimeError):
    """A poll's outputs were not all acknowledged; nothing of it was committed, and it will be embedded again."""


@dataclass
class Embedded:
    """What one poll's records became."""

    outputs: list[Output] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    texts: int = 0
    vectors: int = 0


def embed_records(records: list[InputRecord], embedder: Embedder, *, output_topic: str, dlq_topic: str,
                  max_message_bytes: int, metrics: EmbedMetrics | None = None) -> Embedded:
    """Decode ``records``, embed the texts of those without a vector (one model call), and return, in
    input order, the internal topic's records (keyed by dataset, with origin headers) and the dead letters.

    >>> import numpy as np
    >>> class Fixed:
    ...     def encode(self, texts): return np.ones((len(texts), 2), dtype=np.float32)
    >>> records = [InputRecord(b'{"sample_id": "a", "label": "x", "text": "hi", "dataset": "d"}',
    ...                        source=SourcePosition(topic="raw", partition=0, offset=7)), InputRecord(b"oops")]
    >>> done = embed_records(records, Fixed(), output_topic="embedded", dlq_topic="dlq", max_message_bytes=10_000)
    >>> topic, key, value, headers = done.outputs[0]
    >>> topic, key, AnnotatedSample.model_validate_json(value).embedding, [d.error_type for d in done.dead_letters]
    ('embedded', b'd', [1.0, 1.0], ['not_json'])
    """
    done = Embedded()
    decoded: list[tuple[InputRecord, AnnotatedSample | DeadLetter]] = [
        (record, decode(record, max_message_bytes)) for record in records]
    to_embed = [(i, sample) for i, (_, sample) in enumerate(decoded)
                if isinstance(sample, AnnotatedSample) and sample.embedding is None]
    vectors = {}
    if to_embed:
        started = time.perf_counter()
        vectors = _encode(embedder, to_embed)
        if metrics is not None:
            metrics.embedding_seconds.observe(time.perf_counter() - started)
        for i, error in [(i, v) for i, v in vectors.items() if isinstance(v, Exception)]:
            decoded[i] = (decoded[i][0], reject(decoded[i][0], f"the embedding model failed on this text: {error}",
                                                "embedding_failed", error))
    for i, (record, sample) in enumerate(decoded):
        if isinstance(sample, DeadLetter):
            done.outputs.append((dlq_topic, None, sample.model_dump_json().encode(), dead_letter_headers(sample)))
            done.dead_letters.append(sample)
            continue
        if sample.embedding is None:
            value = sample.model_copy(update={"embedding": vectors[i].tolist()}).model_dump_json().encode()
            done.texts += 1
        else:
            value = record.value  # a vector already: forwarded as it came
            done.vectors += 1
        headers = origin_headers(record.source) if record.source is not None else []
        done.outputs.append((output_topic, sample.dataset.encode(), value, headers))
    return done


def _encode(embedder: Embedder, items: list[tuple[int, AnnotatedSample]]) -> dict:
    """Each item's vector by its index, in one model call; if that call fails, text by text, so only
    the texts the model cannot take get their exception instead of a vector."""
    try:
        return dict(zip((i for i, _ in items), embedder.encode([sample.text for _, sample in items])))
    except Exception:  # noqa: BLE001 - one bad text must not stop the stream: find it
        log.warning("the embedding model failed on a poll's texts; embedding them one by one", exc_info=True)
    vectors = {}
    for i, sample in items:
        try:
            vectors[i] = embedder.encode([sample.text])[0]
        except Exception as error:  # noqa: BLE001
            vectors[i] = error
    return vectors


class EmbedStage:
    """The embedder's Kafka loop: poll, embed, produce in order, wait for every ack, commit."""

    def __init__(self, settings, embedder: Embedder, metrics: EmbedMetrics | None = None,
                 health: Health | None = None):
        self.settings = settings
        self.embedder = embedder
        self.metrics = metrics or EmbedMetrics()
        self.health = health or Health(stall_after_s=settings.max_poll_interval_ms / 1000)
        self.stop_event = threading.Event()
        self.started = False
        self.consumed = 0

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> int:
        """Embed until :meth:`stop`; returns the number of records consumed."""
        s = self.settings
        if s.embedding_preload and hasattr(self.embedder, "load"):
            self.embedder.load()  # before joining the group: no poll interval should pay for loading a model
        self.health.model_ready = True
        consumer = KafkaConsumer(group_id=s.group_id, **consumer_options(s))
        consumer.subscribe([s.input_topic])
        # one request in flight: a partition's outputs land in the order they were sent (see the module)
        producer = kafka_producer(s, max_in_flight_requests_per_connection=1)
        log.info("embedding %s into %s as group %s", s.input_topic, s.output_topic, s.group_id)
        self.started = True
        pending: dict[TopicPartition, OffsetAndMetadata] = {}
        try:
            while not self.stop_event.is_set():
                try:
                    polled = consumer.poll(timeout_ms=s.poll_timeout_ms, max_records=s.max_poll_records)
                except KafkaError as error:
                    log.warning("poll failed, retrying in 1 s: %s: %s", type(error).__name__, error)
                    self.metrics.poll_errors.inc()
                    self.health.polled(broker_reachable=False, assigned=len(consumer.assignment()))
                    self.stop_event.wait(1.0)
                    continue
                self.health.polled(broker_reachable=broker_connected(consumer), assigned=len(consumer.assignment()))
                if polled:
                    pending.update(self._handle(producer, polled))
                if pending:
                    pending = self._commit(consumer, pending)
                update_lag(consumer, self.metrics.consumer_lag)
        finally:
            producer.close(timeout=5)
            consumer.close(autocommit=False)
            log.info("stopped after %d records", self.consumed)
        return self.consumed

    def _handle(self, producer, polled) -> dict[TopicPartition, OffsetAndMetadata]:
        started = time.perf_counter()
        s = self.settings
        records = input_records(polled)
        done = embed_records(records, self.embedder, output_topic=s.output_topic, dlq_topic=s.dlq_topic,
                             max_message_bytes=s.max_message_bytes, metrics=self.metrics)
        self._deliver(producer, done.outputs)
        for letter in done.dead_letters:
            self.metrics.invalid.labels(reason=letter.error_type).inc()
        self.metrics.forwarded.labels(kind="text").inc(done.texts)
        self.metrics.forwarded.labels(kind="vector").inc(done.vectors)
        self.metrics.consumed.inc(len(records))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.consumed += len(records)
        return {tp: OffsetAndMetadata(rs[-1].offset + 1, "", -1) for tp, rs in polled.items() if rs}

    def _deliver(self, producer, outputs: list[Output]) -> None:
        """Produce ``outputs`` in order and wait for every acknowledgement, or raise :class:`EmbedDeliveryError`.

        Nothing is sent again from here: a resend could land after a later record of the same
        partition, and the judge would take it for a replay. The producer's own retries keep order.
        """
        futures = []
        try:
            for topic, key, value, headers in outputs:
                futures.append(producer.send(topic, key=key, value=value, headers=headers))
            producer.flush()
            timeout = self.settings.delivery_timeout_ms / 1000 + 5
            for future in futures:
                future.get(timeout=timeout)
        except KafkaError as error:
            raise EmbedDeliveryError(f"{len(outputs)} output records not all acknowledged ({type(error).__name__}: "
                                     f"{error}); nothing of this poll was committed") from error

    def _commit(self, consumer: KafkaConsumer, pending: dict) -> dict:
        """Commit what was delivered; returns what is still to commit (kept after an unanswered commit)."""
        try:
            consumer.commit(pending)
        except CommitFailedError as error:
            # the group rebalanced: the partitions' next owner embeds these records again, and the
            # judge skips the copies by their origin
            log.warning("commit refused after a rebalance; the records will be embedded again: %s", error)
            self.metrics.commit_failures.inc()
        except KafkaError as error:
            log.warning("commit failed, retried after the next poll: %s: %s", type(error).__name__, error)
            self.metrics.commit_failures.inc()
            return pending
        return {}
