"""The Kafka loop: poll a micro-batch, judge it, produce the results, then commit.

Guarantee: **at-least-once**. Offsets are committed only at a checkpoint, after every review
event and dead letter before it has been acknowledged by the broker and the detector state has
been saved. A crash before the commit replays the batches since the last checkpoint; replayed
review events carry the same deterministic ``event_id``.

One iteration, in order:

1. ``poll`` up to ``max_poll_records`` records, fewer when the measured cost per record says more
   would not fit in a quarter of ``max_poll_interval_ms`` (:class:`~consumer.pacing.PollPacer`);
2. decode, embed and judge them (:class:`~consumer.pipeline.Pipeline`), in chunks when they take
   long; records not reached once the time budget is spent are handed back to the next poll;
3. produce review events (keyed by ``sample_id``), dead letters (with error headers) and, when a
   verdict topic is set, one verdict per processed sample. The re-audits a completed learning step
   queues are spread over the batches until the next step, each poll's share run once its first
   verdicts are delivered, and idle polls run slices of ``reaudit_slice`` of them, so they never
   hold a first verdict back;
4. ``flush`` the producer and check every delivery. Failed records are sent again with
   exponential backoff (``delivery_attempts``, ``delivery_backoff_ms``); if they still fail, the
   service stops with :class:`DeliveryError` *without* committing the batch, which is replayed;
5. every ``checkpoint_interval_ms``, when partitions are revoked, and on exit:
   :meth:`LabelwatchService.checkpoint` saves the state, then commits the next offsets.

SIGTERM or SIGINT only set a stop flag; the loop finishes its batch, commits and closes. With
``flush_on_stop`` (the demo), the end of the stream comes first: a final re-audit of every window,
delivered like any batch (:meth:`LabelwatchService.flush_and_deliver`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from consumer.health import Health
from consumer.pacing import PollPacer
from consumer.pipeline import BatchResult, InputRecord, Pipeline
from consumer.records import input_records
from consumer.settings import Settings
from consumer.sinks import KafkaSink, kafka_producer
from consumer.state import StateUnwritable
from consumer.tailing import broker_connected, update_lag

log = logging.getLogger(__name__)

def consumer_options(s: Settings) -> dict:
    """kafka-python consumer options of the service: manual commits, group timings, fetch sizes, security."""
    return dict(
        enable_auto_commit=False,
        auto_offset_reset=s.auto_offset_reset,
        max_poll_records=s.max_poll_records,
        max_poll_interval_ms=s.max_poll_interval_ms,
        session_timeout_ms=s.session_timeout_ms,
        heartbeat_interval_ms=s.heartbeat_interval_ms,
        fetch_max_wait_ms=s.fetch_max_wait_ms,
        fetch_max_bytes=max(52_428_800, s.max_message_bytes),
        max_partition_fetch_bytes=max(1_048_576, s.max_message_bytes * 2),
        **s.kafka_config(),
    )


@dataclass
class ServiceStats:
    """Running totals, for the demo, tests and logs."""

    consumed: int = 0
    processed: int = 0
    dead_lettered: int = 0
    review_events: int = 0
    batches: int = 0
    checkpoints: int = 0
    corrections: int = 0


class LabelwatchService:
    """Consumes AnnotatedSamples from Kafka and produces review events and dead letters."""

    def __init__(self, settings: Settings, pipeline: Pipeline, health: Health | None = None,
                 *, flush_on_stop: bool = False):
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self.health = health or Health(stall_after_s=settings.max_poll_interval_ms / 1000)
        self.flush_on_stop = flush_on_stop
        self.final: BatchResult | None = None  # with flush_on_stop, what the final re-audit delivered
        self.sink: KafkaSink | None = None  # every output goes through it; made by run()
        self.stats = ServiceStats()
        self.pacer = PollPacer.for_poll_interval(settings.max_poll_interval_ms, settings.max_poll_records)
        self.stop_event = threading.Event()
        self.assigned = threading.Event()
        self._pending: dict = {}  # partition -> next offset, processed and delivered but not committed
        self._consumer_ref: KafkaConsumer | None = None
        self._failed = False  # a batch failed half-way: the state in memory must never be saved
        self.fatal: BaseException | None = None  # an error the rebalance listener met, raised by run()
        self.started = False  # True once the poll loop runs; before, nothing needs a graceful stop

    def stop(self) -> None:
        self.stop_event.set()

    def _consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(group_id=self.settings.group_id, **consumer_options(self.settings))
        topics = [self.settings.input_topic] + ([self.settings.corrections_topic] if self.settings.corrections_topic else [])
        consumer.subscribe(topics, listener=_CheckpointOnRevoke(self))
        return consumer

    def _producer(self, **overrides) -> KafkaProducer:
        return kafka_producer(self.settings, **overrides)

    def run(self) -> ServiceStats:
        """Consume until :meth:`stop` is called; checkpoint and close on the way out."""
        s = self.settings
        if s.embedding_preload:  # before joining the group: no poll interval should pay for loading a model
            self.pipeline.prepare()
        self.health.model_ready = True
        log.info("connecting to %s (%s)", s.bootstrap_servers, s.security_protocol)
        self._consumer_ref = consumer = self._consumer()
        producer = self._producer()
        # a stop cuts resends short, unless the stream's end is still to be delivered
        self.sink = KafkaSink(s, producer, self.metrics, None if self.flush_on_stop else self.stop_event)
        log.info("consuming %s as group %s", s.input_topic, s.group_id)
        self.started = True
        interval = self.settings.checkpoint_interval_ms / 1000
        last_checkpoint = time.monotonic()
        try:
            while not self.stop_event.is_set():
                try:
                    # with re-audits waiting, only look for records: when none came, run a slice of them
                    polled = consumer.poll(timeout_ms=0 if self.pipeline.pending_reaudits else self.settings.poll_timeout_ms,
                                           max_records=self.pacer.poll_records())
                except KafkaError as error:
                    # kafka-python 3 raises from poll() while no broker answers (a restart, a network
                    # split): nothing was consumed, so wait and poll again; /readyz reports it
                    log.warning("poll failed, retrying in 1 s: %s: %s", type(error).__name__, error)
                    self.metrics.poll_errors.inc()
                    self.health.polled(broker_reachable=False, assigned=len(consumer.assignment()))
                    self.stop_event.wait(1.0)
                    continue
                if self.fatal is not None:
                    raise self.fatal
                assignment = consumer.assignment()
                if assignment:
                    self.assigned.set()
                self.health.polled(broker_reachable=broker_connected(consumer), assigned=len(assignment))
                if polled:
                    self._guarded(self._handle, consumer, polled)
                elif self.pipeline.pending_reaudits:  # idle: get ahead with the queued re-audits
                    self._guarded(self._reaudit_slice)
                if (self._pending or self.pipeline.changed) and time.monotonic() - last_checkpoint >= interval:
                    self.checkpoint()
                    last_checkpoint = time.monotonic()
                update_lag(consumer, self.metrics.consumer_lag)
            if self.flush_on_stop:
                self._guarded(self.flush_and_deliver)
            self.checkpoint()
        finally:
            producer.flush()
            producer.close()
            consumer.close(autocommit=False)
            log.info("stopped after %d records", self.stats.consumed)
        return self.stats

    def _guarded(self, work, *args) -> None:
        """Run ``work``, which judges and delivers; if it fails, mark the state in memory unsavable."""
        try:
            work(*args)
        except BaseException:
            # the detectors may have judged what was never delivered: saving that state
            # would make a replay skip those records. Stop with the last checkpoint intact.
            self._failed = True
            raise

    def flush_and_deliver(self) -> BatchResult:
        """The end of the stream: re-audit every window (:meth:`~consumer.pipeline.Pipeline.flush`),
        deliver the late events and verdicts through the sink, like any batch, and keep them in ``final``.

        ``run`` calls it on stop when ``flush_on_stop`` is set, before its last checkpoint and while
        its producer is still open.
        """
        result = self.pipeline.flush()
        self.sink.deliver(result)
        self.stats.review_events += len(result.events)
        self.final = result
        return result

    def checkpoint(self, *, blocking: bool = True) -> None:
        """Make everything processed so far durable, in order: outputs, state, then offsets.

        1. the producer is flushed and every delivery confirmed (done per batch by the sink);
        2. the detector state of every changed dataset is saved atomically, with the offsets up to
           which it judged each partition;
        3. the next offset of every partition processed is committed.

        A crash before 3 replays the uncommitted batches. Records the saved state already judged
        are skipped (their outputs went out in 1); the rest are judged again from that state,
        exactly as before, so repeated outputs are identical, ids included.

        ``blocking=False`` commits asynchronously, best effort: for the rebalance listener, which
        runs on the consumer's network thread and must not block on it. Correctness does not rest
        on that commit: the state saved in 2 tells the next owner what to skip.
        """
        if not (self._pending or self.pipeline.changed) or self._failed:
            return  # (re-audit slices change the state without consuming anything)
        self.sink.producer.flush()
        try:
            saved = self.pipeline.checkpoint()
        except StateUnwritable:
            self._failed = True  # not saved: nothing may be committed past the last checkpoint
            raise
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._pending.items()}
        try:
            if offsets and blocking:
                self._consumer_ref.commit(offsets)
            elif offsets:
                self._consumer_ref.commit_async(offsets)
        except CommitFailedError as error:
            # The group rebalanced under us (e.g. a poll outlasted max_poll_interval_ms). The outputs
            # are delivered; the partitions' next owner replays these batches with the same event ids.
            log.warning("commit failed after a rebalance, the batches will be replayed: %s", error)
            self.metrics.commit_failures.inc()
        except KafkaError as error:
            # No coordinator answered in time (a network split, a broker away). Outputs and state are
            # durable; only the commit is not: keep the offsets, and commit them at the next checkpoint.
            log.warning("commit failed, retried at the next checkpoint: %s: %s", type(error).__name__, error)
            self.metrics.commit_failures.inc()
            return
        self._pending.clear()
        self.stats.checkpoints += 1
        self.pipeline.publish_annotator_metrics(self.settings.annotator_metrics_top)
        log.debug("checkpoint: %d datasets saved, %d partitions committed", saved, len(offsets))

    def _handle(self, consumer: KafkaConsumer, polled) -> None:
        """Judge a poll's records and deliver the outputs, within the pacer's time budget.

        A poll the pacer expects to outlast a quarter of its budget is worked in chunks; once the
        budget is spent, the records not reached are handed back (the consumer seeks to the first
        of each partition) and come again with the next poll, so no poll's work outlasts
        ``max_poll_interval_ms`` and the group never evicts this consumer for being slow.
        """
        started = time.perf_counter()
        records = input_records(polled)
        corrections_topic = self.settings.corrections_topic
        corrections = [r for r in records if corrections_topic and r.source.topic == corrections_topic]
        self.pipeline.observe_log(*_log_of(consumer, polled))
        result = BatchResult()
        if corrections:
            # reviewers' answers first: they may hold back a flag on a similar sample in this very batch
            records = [r for r in records if r.source.topic != corrections_topic]
            result.dead_letters += self.pipeline.correct(corrections).dead_letters
            self.stats.corrections += len(corrections)
        done, chunk, working = 0, self.pacer.chunk_records(), 0.0
        defer = self.settings.reaudit_slice > 0
        while done < len(records) and not (done and self.pacer.spent(time.perf_counter() - started)):
            part = records[done:done + chunk]
            part_started = time.perf_counter()
            part_result = self.pipeline.process(part, defer_reaudits=defer)
            working += time.perf_counter() - part_started
            result.events += part_result.events
            result.verdicts += part_result.verdicts
            result.dead_letters += part_result.dead_letters
            result.n_processed += part_result.n_processed
            done += len(part)
        records, handed_back = records[:done], records[done:]
        self._hand_back(consumer, handed_back)
        self.sink.deliver(result)  # the first verdicts: one flush per poll
        if defer:  # then the poll's share of the deferred re-audits, so that no first verdict waits for them
            reaudits_started = time.perf_counter()
            late = self.pipeline.run_owed_reaudits()
            self.sink.deliver(late)
            working += time.perf_counter() - reaudits_started
            result.events += late.events
        self.pacer.observe(done, working)
        for record in corrections + records:
            tp = TopicPartition(record.source.topic, record.source.partition)
            self._pending[tp] = max(self._pending.get(tp, 0), record.source.offset + 1)
        now = time.time()
        for record in records:
            if record.timestamp_ms and record.timestamp_ms > 0:
                self.metrics.record_latency.observe(max(0.0, now - record.timestamp_ms / 1000))
        self.metrics.samples_consumed.inc(len(records))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.reaudits_pending.set(self.pipeline.pending_reaudits)
        self.stats.consumed += len(records)
        self.stats.processed += result.n_processed
        self.stats.dead_lettered += len(result.dead_letters)
        self.stats.review_events += len(result.events)
        self.stats.batches += 1

    def _hand_back(self, consumer: KafkaConsumer, records: list[InputRecord]) -> None:
        """Seek each partition back to its first record in ``records``: the next poll brings them again."""
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.source.topic, record.source.partition)
            first[tp] = min(first.get(tp, record.source.offset), record.source.offset)
        for tp, offset in first.items():
            consumer.seek(tp, offset)
        if records:
            self.metrics.records_handed_back.inc(len(records))
            log.debug("poll budget of %.1f s spent: %d records handed back to the next poll",
                      self.pacer.budget_s, len(records))

    def _reaudit_slice(self) -> None:
        """Run ``reaudit_slice`` deferred re-audits, while no records wait, and deliver their late verdicts.

        A learning step's re-audits re-score about three samples for each one learned. Run with the
        batch that completed the step, they would hold back every record behind it. Deferred, each
        batch until the next step runs its share of them once its first verdicts are delivered
        (:meth:`~detectors.LabelMonitor.process`), and idle polls run slices. They belong to the
        detector state: a checkpoint saves those not run yet, and a restart runs them.
        """
        started = time.perf_counter()
        result = self.pipeline.run_reaudits(self.settings.reaudit_slice)
        self.sink.deliver(result)
        self.metrics.reaudit_seconds.observe(time.perf_counter() - started)
        self.metrics.reaudits_pending.set(self.pipeline.pending_reaudits)
        self.stats.review_events += len(result.events)


def _log_of(consumer: KafkaConsumer, polled) -> tuple[dict[tuple[str, int], int], dict[str, str]]:
    """The end offset of each polled partition (from the fetch that brought its records) and each topic's id.

    Topic ids come from kafka-python's cluster metadata, a private API: if it changes shape, the
    end offsets alone still catch a log that lost records.
    """
    ends = {}
    for tp in polled:
        end = consumer.highwater(tp)
        if end is not None:
            ends[(tp.topic, tp.partition)] = end
    ids = {}
    try:
        cluster = consumer._client.cluster
        for topic in {tp.topic for tp in polled}:
            topic_id = cluster.topic_id(topic)
            if topic_id is not None and topic_id.int != 0:
                ids[topic] = str(topic_id)
    except Exception:  # noqa: BLE001 - a private API: degrade to end offsets only
        pass
    return ends, ids


class _CheckpointOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another instance, make what was processed from them durable."""

    def __init__(self, service: LabelwatchService):
        self.service = service

    def on_partitions_revoked(self, revoked) -> None:
        # called from poll(), on the consumer's network thread: the pipeline is idle, but a blocking
        # commit would deadlock, so the commit is asynchronous (the saved state makes it optional)
        if self.service._consumer_ref is not None:
            try:
                self.service.checkpoint(blocking=False)
            except StateUnwritable as error:  # kafka-python would only log it: run() raises it after this poll
                self.service.fatal = error
                return
            if not self.service._failed:
                # the partitions' datasets may move to another instance, which advances their
                # checkpoints: forget them, and restore whatever we get assigned from its latest one
                self.service.pipeline.release()

    def on_partitions_assigned(self, assigned) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
